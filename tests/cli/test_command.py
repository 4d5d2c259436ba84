"""Every CLI command is declared with `starter.cli_common.command`, which gives it its
--output option, its exit code and its error mapping (a CliError: its message, as JSON
with --output json, and its code)."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from starter.cli import app as kepler_app
from starter.cli_common import BAD_INPUT, COMMAND_MARK, OK, REFUSED, CliError, command

# Declared without it, on purpose: `dev` answers a bad --output with a usage error of its
# own, and `demo` reports its failures itself (neither ever used the old `guarded`).
UNDECORATED = {"dev up", "dev down", "dev status", "demo"}
GROUPS_ONLY = {"dev", "service", "job", "schedule", "preview"}  # no callback: nothing to declare


def declared(app: typer.Typer, path: str = "") -> Iterator[tuple[str, Any]]:
    """(the command's path, the function typer calls) for every command and group; None
    for a group without a callback of its own."""
    if path:
        yield path, app.registered_callback.callback if app.registered_callback else None
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        yield f"{path} {name}".strip(), info.callback
    for group in app.registered_groups:
        yield from declared(group.typer_instance, f"{path} {group.name}".strip())


def click_paths(cmd: Any, path: str = "") -> Iterator[str]:
    """Every command path of the assembled CLI, as click sees it."""
    for name, sub in getattr(cmd, "commands", {}).items():
        yield f"{path} {name}".strip()
        yield from click_paths(sub, f"{path} {name}".strip())


def test_every_command_goes_through_the_decorator() -> None:
    commands = dict(declared(kepler_app))
    assert set(commands) == set(click_paths(typer.main.get_command(kepler_app)))
    assert {path for path, func in commands.items() if func is None} == GROUPS_ONLY
    undecorated = {path for path, func in commands.items()
                   if func is not None and not getattr(func, COMMAND_MARK, False)}
    assert undecorated == UNDECORATED


def test_operation_commands_take_output() -> None:
    root = typer.main.get_command(kepler_app)
    servers = {"worker", "alerts", "chatops", "codec-server", "metrics serve", "console",
               "preview hooks"}
    for path in set(click_paths(root)) - servers - GROUPS_ONLY:
        cmd = root
        for part in path.split():
            cmd = cmd.commands[part]
        assert "--output" in [o for p in cmd.params for o in p.opts], path


def tiny_app() -> typer.Typer:
    app = typer.Typer()
    group = typer.Typer(invoke_without_command=True)
    app.add_typer(group, name="group")

    @command(app)
    def refuse(service: str, *, as_json: bool) -> int:
        """Refuse SERVICE."""
        raise CliError(f"{service}: refused", REFUSED, {"service": service})

    @command(app, "exit-with")
    def exit_with(code: int, *, as_json: bool) -> int:
        """Exit with CODE."""
        typer.echo(f"as_json={as_json}")
        return code

    @command(app, output=False)
    def plain() -> None:
        """No --output."""
        raise CliError("plain failure", BAD_INPUT)

    @command(group, callback=True)
    def group_body(as_json: bool) -> int:
        """The group alone."""
        typer.echo("group body ran")
        return 5

    @command(group, "sub")
    def sub(as_json: bool) -> int:
        """A subcommand."""
        typer.echo("sub ran")
        return OK

    return app


def test_a_cli_error_in_json_mode_prints_the_json_error_and_exits_with_its_code() -> None:
    result = CliRunner().invoke(tiny_app(), ["refuse", "shop", "--output", "json"])
    assert result.exit_code == REFUSED
    assert json.loads(result.stdout) == {"error": "shop: refused", "service": "shop"}


def test_a_cli_error_in_text_mode_prints_its_message_on_stderr() -> None:
    result = CliRunner().invoke(tiny_app(), ["refuse", "shop"])
    assert result.exit_code == REFUSED
    assert result.stdout == ""
    assert "error: shop: refused" in result.stderr


@pytest.mark.parametrize("args, code, out", [
    (["exit-with", "0"], OK, "as_json=False"),
    (["exit-with", "1", "-o", "json"], 1, "as_json=True"),
    (["exit-with", "4", "--output", "text"], 4, "as_json=False"),
])
def test_the_return_value_is_the_exit_code(args: list[str], code: int, out: str) -> None:
    result = CliRunner().invoke(tiny_app(), args)
    assert (result.exit_code, result.stdout.strip()) == (code, out)


def test_a_bad_output_is_bad_input_in_text() -> None:
    result = CliRunner().invoke(tiny_app(), ["exit-with", "0", "-o", "yaml"])
    assert result.exit_code == BAD_INPUT
    assert "--output: must be text or json" in result.stderr


def test_a_command_without_output_maps_errors_in_text_and_has_no_output_option() -> None:
    result = CliRunner().invoke(tiny_app(), ["plain"])
    assert (result.exit_code, result.stderr.strip()) == (BAD_INPUT, "error: plain failure")
    assert CliRunner().invoke(tiny_app(), ["plain", "-o", "json"]).exit_code == 2  # usage error


def test_a_group_callback_runs_only_without_a_subcommand() -> None:
    alone = CliRunner().invoke(tiny_app(), ["group"])
    assert (alone.exit_code, alone.stdout.strip()) == (5, "group body ran")
    with_sub = CliRunner().invoke(tiny_app(), ["group", "sub"])
    assert (with_sub.exit_code, with_sub.stdout.strip()) == (OK, "sub ran")


def test_output_and_as_json_go_together() -> None:
    with pytest.raises(TypeError, match="as_json"):
        command(typer.Typer())(lambda service: None)
    with pytest.raises(TypeError, match="as_json"):
        command(typer.Typer(), "x", output=False)(lambda as_json: None)
