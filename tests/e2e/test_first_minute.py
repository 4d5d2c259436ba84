"""Issue 32, as a newcomer meets Kepler after `make demo`, with the CLI's output going to a
pipe (as to a file or a CI log): the README's own commands of "Services and releases" run
as they are (no KEPLER_USER: the sandbox's `dev` acts), their output read line by line (no
colour codes, no box drawing, one line per step); the demo's sections each on a line of
their own; and every refusal the README promises comes with its exit code — the
promotion's before anything starts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kepler.models import ReleaseRequest
from sandbox.serve import Sandbox
from tests.helpers import signed
from tests.workers import worker_with
from tests.e2e.test_release import _poll  # the status poll every e2e module shares

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
README = Path(__file__).resolve().parents[2] / "README.md"
ANSI = re.compile(r"\x1b\[")
BOX = re.compile(r"[\u2500-\u257f]")
STEP_LINE = re.compile(r"^  (done|failed|skipped|undone) +\S")


async def newcomer(platform_file: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """`kepler ARGS` as a newcomer runs it in CI: no KEPLER_USER, no COLUMNS, output to pipes."""
    clean = {k: v for k, v in os.environ.items() if k not in (
        "KEPLER_USER", "COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "PY_COLORS")}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kepler"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**clean, "KEPLER_CONFIG": str(platform_file), **env})
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode(), err.decode()


def plain_lines(text: str) -> list[str]:
    """The output's lines, failing on a colour code or a box-drawing character in any."""
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        assert not ANSI.search(line), f"line {n} has a colour code: {line!r}"
        assert not BOX.search(line), f"line {n} draws a box: {line!r}"
    return lines


def watched(text: str, heading: str) -> list[str]:
    """A --watch off a terminal: the operation's line, a line per step as it ended, the
    outcome and its link on the last line."""
    lines = plain_lines(text)
    assert lines[0].startswith(heading), lines
    assert sum(bool(STEP_LINE.match(line)) for line in lines) >= 3, lines
    assert re.match(r"^succeeded  http://\S+$", lines[-1]), lines
    return lines


def readme_block(first_line: str, language: str = "") -> str:
    """The README's code block that begins with `first_line`."""
    text = README.read_text()
    start = text.index(f"```{language}\n{first_line}") + len(f"```{language}\n")
    return text[start:text.index("```", start)]


async def test_the_readmes_commands_run_as_they_are_after_make_demo(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    service = "firstmin"
    spec = yaml.safe_load(readme_block("name: checkout", "yaml"))
    (tmp_path / "checkout.yaml").write_text(yaml.safe_dump({**spec, "name": service}))
    commands = [shlex.split(re.sub(r"\bcheckout\b(?!\.yaml)", service, line.split("#")[0]))
                for line in readme_block("kepler service create -f checkout.yaml").splitlines()]

    def run(n: int) -> list[str]:
        assert commands[n][0] == "kepler", commands[n]
        return [str(tmp_path / a) if a == "checkout.yaml" else a for a in commands[n][1:]]

    code, out, err = await newcomer(platform_file, *run(0))  # service create -f ... --watch
    assert code == 0, out + err
    watched(out, f"create {service}")
    code, out, err = await newcomer(platform_file, *run(1))  # release --env staging --watch
    assert code == 0, out + err
    watched(out, f"release {service}@staging")

    assert commands[2][2:6] == [service, "--env", "prod", "--from"], commands[2]
    code, out, err = await newcomer(platform_file, *run(2))  # the promotion, returns at once
    assert code == 0, out + err
    assert plain_lines(out)[0].startswith(f"started {service}@prod"), out
    pending = await _poll(platform_file, service, "prod",
                             lambda s: s.get("stage") == "awaiting approval", "approval")
    assert (pending["requested_by"], pending["requester_verified"]) == ("dev", True)

    # the README's approval rules, each an exit 3 at once
    code, out, err = await newcomer(platform_file, "approve", service, "--env", "prod")
    assert code == 3 and "dev requested this operation and may not approve it" in err, out + err
    code, out, err = await newcomer(platform_file, "approve", service, "--env", "prod", "--as", "carol")
    assert code == 3 and "carol is not an approver for prod" in err, out + err

    code, out, err = await newcomer(platform_file, *run(3))  # approve ... --as alice
    assert code == 0, out + err
    final = await _poll(platform_file, service, "prod",
                           lambda s: s.get("outcome") not in (None, "running"), "outcome")
    assert final["outcome"] == "succeeded", final
    code, out, err = await newcomer(platform_file, "approve", service, "--env", "prod", "--as", "alice")
    assert code == 3 and "nothing is pending approval" in err, out + err

    code, out, err = await newcomer(platform_file, *run(4))  # status --env prod: the table
    assert code == 0, out + err
    lines = plain_lines(out)
    assert lines[0].startswith(f"release {service}@prod") and "(succeeded)" in lines[0], lines
    assert lines[1].split()[:3] == ["step", "took", "detail"], lines
    for args in (["history", service], ["service", "show", service], ["service", "list"]):
        code, out, err = await newcomer(platform_file, *args)
        assert code == 0, args + [out, err]
        plain_lines(out)


def soaking(config: dict[str, Any]) -> None:
    """prod soaks an hour after staging; qa is an environment off the path."""
    config["promotion"] = {"prod": {"from": "staging", "soak": "1h"}}
    config["environments"]["qa"] = {**config["environments"]["staging"],
                                    "namespace": "{service}-qa"}


async def test_a_promotion_younger_than_its_soak_is_refused_with_exit_3_before_it_starts(
        sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> None:
    """README, Promotion: refused with exit 3 before anything changes — before anything
    starts, with or without --watch; the workflow, started without the CLI, refuses too."""
    from kepler.clients import operations as operations_client

    async with worker_with(sandbox, dev_env, tmp_path, "kepler-e2e-soak", soaking) as cfg:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "soaky", "team": "t", "replicas": 1}))
        code, out, err = await newcomer(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                        "--watch")
        assert code == 0, out + err

        async def nothing_started() -> None:
            code, out, err = await newcomer(cfg, "status", "soaky", "--env", "prod")
            assert code == 1 and "no operation found" in err, out + err

        code, out, err = await newcomer(cfg, "release", "soaky", "--env", "prod", "--from", "staging")
        assert code == 3 and "nothing to promote from staging" in err, out + err
        assert "not a release Kepler recorded live" in err, err
        await nothing_started()

        code, out, err = await newcomer(cfg, "release", "soaky", "--env", "staging", "--ref",
                                        "main", "--watch")
        assert code == 0, out + err
        for watch in ([], ["--watch"]):
            code, out, err = await newcomer(cfg, "release", "soaky", "--env", "prod", "--from",
                                            "staging", *watch)
            assert code == 3, out + err
            assert re.search(r"main \([0-9a-f]{12}\) has been live in staging since .* UTC, "
                             r"less than prod's soak of 1:00:00", err), err
            assert len(err) > 100 and plain_lines(err) == [err.rstrip("\n")]  # nothing wraps it
            await nothing_started()
        code, out, err = await newcomer(cfg, "release", "soaky", "--env", "prod", "--from", "qa")
        assert code == 2, out + err
        assert "--from: prod is promoted from staging (promotion.prod.from), not from qa" in err
        await nothing_started()

        # the CLI's check is a courtesy: the workflow, started without it, refuses on its own
        started = await operations_client.start(dev_env.client, signed(ReleaseRequest(
            service="soaky", env="prod", from_env="staging", requested_by="dev")), "kepler-e2e-soak")
        with pytest.raises(Exception):
            await started.handle.result()
        status = await operations_client.status(dev_env.client, "soaky@prod")
        assert status.refused and "less than prod's soak of 1:00:00" in status.error, status
        assert not any(s.name in ("build", "approval", "apply") for s in status.steps), status.steps

        # the demo's step 3 meets the same refusal, and says so (not "never asked for approval")
        code, out, err = await newcomer(cfg, "demo")
        assert code == 1, out + err
        assert "3. promote staging's v1 to prod" in err and "less than prod's soak of 1:00:00" in err, err
        assert "never asked for approval" not in out + err


async def test_a_break_glass_without_two_other_approvers_is_refused_exit_3_with_watch(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """README, Freeze windows: a break-glass with fewer than two approvers other than the
    requester is refused — only the workflow can tell, so exit 3 with --watch; without it the
    command started the operation (exit 0) and `kepler status` shows the refusal."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "glassy", "team": "t", "replicas": 1}))
    code, out, err = await newcomer(platform_file, "service", "create", "-f",
                                    str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    args = ["release", "glassy", "--env", "prod", "--ref", "main", "--break-glass", "--reason",
            "hotfix", "--as", "alice"]  # prod's approvers: alice and bob
    code, out, err = await newcomer(platform_file, *args, "--watch")
    assert code == 3, out + err
    assert "prod lists 1 approver(s) other than alice (bob), and a break-glass needs 2" in err, err
    code, out, err = await newcomer(platform_file, *args)
    assert code == 0 and plain_lines(out)[0].startswith("started glassy@prod"), out + err
    final = await _poll(platform_file, "glassy", "prod",
                           lambda s: s.get("outcome") not in (None, "running"), "outcome")
    assert final["outcome"] == "failed" and final["refused"], final
    assert "a break-glass needs 2" in final["error"], final


async def test_the_demo_reads_plainly_in_a_log(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any) -> None:
    """`make demo > demo.log`: each section's title on a line of its own after a blank one
    (never glued to a table's last border), no colour codes, no box drawing."""
    code, out, err = await newcomer(platform_file, "demo")
    assert code == 0, out[-4000:] + err
    lines = plain_lines(out)
    sections = [n for n, line in enumerate(lines) if "==" in line]
    titles = [lines[n] for n in sections]
    assert [t.split(".")[0] for t in titles[:-1]] == [f"== {i}" for i in range(1, 8)], titles
    assert titles[-1] == "== done ==", titles
    for n in sections:
        assert re.fullmatch(r"== .+ ==", lines[n]) and lines[n - 1] == "", lines[n - 2:n + 1]
    assert any(line.startswith("release demo-shop@prod") for line in lines), lines
    assert any(re.match(r"^rolled_back in \d+\.\d+s", line) for line in lines), lines
    assert sum(bool(STEP_LINE.match(line)) for line in lines) > 20, lines


def real_identity(config: dict[str, Any]) -> None:
    """A real platform's identity: people sign with their own keys, never picked by name."""
    del config["identity"]["sandbox_keys"]


async def test_with_a_real_platform_file_you_are_who_your_key_says(
        sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> None:
    from kepler.identity_settings import kepler_home

    async with worker_with(sandbox, dev_env, tmp_path, "kepler-e2e-keys", real_identity) as cfg:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "keyed", "team": "t",
                                                            "owners": ["carol"]}))
        carols = str(kepler_home() / "keys" / "carol")
        code, out, err = await newcomer(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                        "--watch", KEPLER_SIGNING_KEY=carols)
        assert code == 0, out + err
        code, out, err = await newcomer(cfg, "status", "keyed", "--env", "all", "-o", "json",
                                        KEPLER_SIGNING_KEY=carols)
        status = json.loads(out)
        assert (status["requested_by"], status["requester_verified"]) == ("carol", True), status
        code, out, err = await newcomer(cfg, "release", "keyed", "--env", "staging", "--ref", "main",
                                        KEPLER_SIGNING_KEY=carols, KEPLER_USER="alice")
        assert code == 2 and "KEPLER_USER=alice, but your key" in err, out + err
