"""What a newcomer reads when the CLI's output goes to a pipe, a file or a CI log (issue
32): help text as plain paragraphs, broken only where the width forces it, every command's
first sentence whole in the command list; no colour codes, no box drawing, and `--watch`
written line by line, each step once, every section on a line of its own. Read line by line
from the real `kepler` CLI (a subprocess writing to a pipe) and from the real watch code."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from kepler.models import Operation, OperationStatus, PendingApproval, StepRecord
from starter.cli import app as kepler_app
from starter.cli_common import first_sentence

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[")
BOX = re.compile(r"[\u2500-\u257f]")  # box drawing: ─ │ ┃ ╭ └ ...
HELP_WIDTH = 78  # click's: min(COLUMNS, 80) - 2
STARTED = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


def kepler_piped(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `kepler`, its stdout and stderr pipes, no terminal, no COLUMNS."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "PY_COLORS")}
    return subprocess.run([str(BIN / "kepler"), *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **env})


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under `group` (typer's own click), by its path."""
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))


ROOT: Any = typer.main.get_command(kepler_app)
COMMANDS = dict(commands(ROOT))


def wrapped_only_at_width(lines: list[str], width: int = HELP_WIDTH) -> list[str]:
    """Every line break inside a paragraph or a definition that the width did not force
    (the next word would have fitted on the line): a docstring's own hard break."""
    bad = []
    for above, below in zip(lines, lines[1:]):
        if not above.strip() or not below.strip() or not above.startswith(" "):
            continue  # a blank line, or a heading: a paragraph ends there
        if above.rstrip().endswith("-"):
            continue  # wrapped at a hyphen (blue-/green), as textwrap does
        indent_above = len(above) - len(above.lstrip())
        indent_below = len(below) - len(below.lstrip())
        definition_item = indent_below < indent_above or below.lstrip().startswith("-") or (
            indent_below == indent_above and indent_above == 2 and in_definitions(lines, above))
        if definition_item:
            continue  # the next option or command, not a continuation
        if len(above.rstrip()) + 1 + len(below.split()[0]) <= width:
            bad.append(f"{above.rstrip()!r} / {below.strip()!r}")
    return bad


def in_definitions(lines: list[str], line: str) -> bool:
    """`line` is in an Options, Arguments or Commands section (one item a line at indent 2)."""
    heading = ""
    for candidate in lines[:lines.index(line) + 1]:
        if candidate and not candidate.startswith(" "):
            heading = candidate
    return heading.rstrip(":") in ("Options", "Arguments", "Commands")


def plain_help(done: subprocess.CompletedProcess[str] | Any) -> list[str]:
    text = done.stdout if hasattr(done, "stdout") else done.output
    assert not ANSI.search(text), text
    assert not BOX.search(text), text
    return text.splitlines()


def test_kepler_help_lists_each_commands_first_sentence_whole_and_plain() -> None:
    lines = plain_help(kepler_piped("--help", COLUMNS="80"))
    assert wrapped_only_at_width(lines) == []
    listed = lines[lines.index("Commands:") + 1:]
    entries: dict[str, str] = {}
    name = ""
    for line in listed:
        if not line.strip():
            break
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            entries[name] = text.strip()
        else:
            entries[name] += " " + line.strip()
    assert set(entries) == set(ROOT.commands)
    for name, text in entries.items():
        cmd = ROOT.commands[name]
        assert text == first_sentence(cmd.short_help or cmd.help), name
        assert not text.endswith("..."), name  # nothing cut at the width
    # the issue's own case: the sentence reads whole, its break only where the width is
    assert ("alerts         Serve POST /alertmanager: Alertmanager webhooks (bearer token\n"
            "                 from KEPLER_ALERTMANAGER_TOKEN) that roll back per the alerts\n"
            "                 policy in kepler.yaml.") in "\n".join(lines)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_commands_help_is_plain_and_breaks_no_sentence(path: tuple[str, ...]) -> None:
    runner = CliRunner()
    done = runner.invoke(kepler_app, [*path, "--help"], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    lines = plain_help(done)
    assert wrapped_only_at_width(lines) == [], path
    cmd = COMMANDS[path]
    words = " ".join(line.strip() for line in lines)
    for paragraph in (cmd.help or "").split("\n\n"):  # every word of the docstring, in order
        assert " ".join(paragraph.split()) in words, (path, paragraph)


def test_the_break_check_catches_a_docstrings_hard_break() -> None:
    """The check above can fail: the old help of `rollback` broke mid-sentence."""
    old = ["Usage: kepler rollback [OPTIONS] SERVICE", "",
           "  Roll SERVICE back in ENV to the previous release, a version or a digest. While a",
           "  blue-green release (or a canary) runs, switch its traffic back to the previous",
           "  version at once, still warm: one route write.", ""]
    assert wrapped_only_at_width(old) == []
    hard = ["  upgrade-check  Before deploying a release that retires patches: replay every",
            "                 open run on the task",
            "                 queue against this code; exit 1 lists each run that would"]
    assert len(wrapped_only_at_width(hard)) == 1


def step(name: str, outcome: str, seconds: float = 0.25, detail: str = "") -> StepRecord:
    return StepRecord(name=name, started_at=STARTED, outcome=outcome, detail=detail,  # type: ignore[arg-type]
                      finished_at=None if outcome == "running" else STARTED + timedelta(seconds=seconds))


def status(steps: list[StepRecord], **fields: Any) -> OperationStatus:
    return OperationStatus(operation=Operation.RELEASE, service="shop", env="prod",
                           requested_by="dev", version="v1@3f1c9e0b", steps=steps, **fields)


def test_watch_off_a_terminal_writes_each_step_once_as_it_ends(capsys: pytest.CaptureFixture[str]) -> None:
    from starter.watch import LineLog

    log = LineLog()
    pending = PendingApproval(env="prod", approvers=["alice", "bob"], requested_by="dev",
                              deadline=STARTED + timedelta(hours=24))
    seen = [
        status([step("read policy", "running")]),
        status([step("read policy", "done"), step("resolve ref", "running")]),
        status([step("read policy", "done"), step("resolve ref", "done", detail="v1 (3f1c9e0b)"),
                step("approval", "running")], pending_approval=pending, stage="awaiting approval"),
        status([step("read policy", "done"), step("resolve ref", "done", detail="v1 (3f1c9e0b)"),
                step("approval", "running")], pending_approval=pending, stage="awaiting approval"),
    ]
    for s in seen:
        log.update(s)
    log.end(status([step("read policy", "done"), step("resolve ref", "done", detail="v1 (3f1c9e0b)"),
                    step("approval", "done"), step("apply", "failed", 1.5, "CrashLoopBackOff"),
                    step("apply", "undone")],
                   outcome="rolled_back", error="step 'apply' failed: CrashLoopBackOff",
                   undone=["apply"]))
    out = capsys.readouterr().out
    assert not ANSI.search(out) and not BOX.search(out), out
    assert out.splitlines() == [
        "release shop@prod v1@3f1c9e0b",
        "  done    read policy  0.2s",
        "  done    resolve ref  0.2s  v1 (3f1c9e0b)",
        "  waiting for approval by one of alice, bob (not dev) until 2026-12-08 03:00 UTC; 0/1 given",
        "  done    approval  0.2s",
        "  failed  apply  1.5s  CrashLoopBackOff",
        "  undone  apply  0.2s",
        "undone: apply",
        "step 'apply' failed: CrashLoopBackOff",
    ]


def test_tables_and_sections_off_a_terminal_are_plain(capsys: pytest.CaptureFixture[str]) -> None:
    from starter.cli_common import console, new_table, section
    from starter.watch import render

    assert not console.is_terminal  # pytest's capture: as in a pipe
    console.print(render(status([step("resolve ref", "done", detail="v1 (3f1c9e0b)")],
                                stage="done", outcome="succeeded")))
    section("3. promote staging's v1 to prod")
    table = new_table("history")
    table.add_column("started")
    table.add_row("2026-12-07 03:00:00")
    console.print(table)
    section("done")
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert not any(ANSI.search(line) or BOX.search(line) for line in lines), lines
    assert lines[0] == "release shop@prod v1@3f1c9e0b — done (succeeded)"
    assert lines[1].split() == ["step", "took", "detail"]
    assert lines[2].split() == ["done", "resolve", "ref", "0.2s", "v1", "(3f1c9e0b)"]
    assert lines[3:6] == ["", "== 3. promote staging's v1 to prod ==", "history"]
    assert lines[-2:] == ["", "== done =="]


class FakeHandle:
    """Stands in for a workflow handle: answers `status` with each of `statuses` in turn,
    and ends (its result) once the last is given."""

    def __init__(self, statuses: list[OperationStatus]) -> None:
        self.statuses = statuses
        self.ended = asyncio.Event()

    async def query(self, name: str, result_type: Any = None) -> OperationStatus:
        if len(self.statuses) == 1:
            self.ended.set()
            return self.statuses[0]
        return self.statuses.pop(0)

    async def result(self) -> None:
        await self.ended.wait()


RUN = [status([step("resolve ref", "running")]),
       status([step("resolve ref", "done", detail="v1 (3f1c9e0b)"), step("apply", "running")]),
       status([step("resolve ref", "done", detail="v1 (3f1c9e0b)"), step("apply", "done")],
              stage="done", outcome="succeeded")]


@pytest.mark.parametrize("terminal", [False, True])
async def test_after_a_watch_the_next_section_starts_on_a_line_of_its_own(
        terminal: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's `└───┘────── 3. promote staging's v1 to prod ───`: rich's live view left its
    last frame without a newline off a terminal. On one (forced here) it still ends its
    frame; off one there is no live view at all."""
    from starter.cli_common import console, section
    from starter.watch import watch

    monkeypatch.setattr(console, "_force_terminal", terminal)
    last = await watch(FakeHandle(list(RUN)), interval=0.01)  # type: ignore[arg-type]
    section("3. promote staging's v1 to prod")
    assert last is not None and last.outcome == "succeeded"
    out = capsys.readouterr().out
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in out.splitlines()]
    titled = [line for line in lines if "3. promote staging's v1 to prod" in line]
    assert len(titled) == 1, lines
    if terminal:  # a rule of its own line, after the table's bottom border
        assert titled[0].strip().startswith("─") and "┘" not in titled[0] and "└" not in titled[0]
        assert any("└" in line for line in lines)
    else:
        assert not ANSI.search(out) and not BOX.search(out), out
        assert lines == ["release shop@prod v1@3f1c9e0b", "  done    resolve ref  0.2s  v1 (3f1c9e0b)",
                         "  done    apply  0.2s", "", "== 3. promote staging's v1 to prod =="]
