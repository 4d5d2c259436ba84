"""How the CLI speaks: the options every command shares, rich text for people, JSON
for scripts, and the exit codes."""

from __future__ import annotations

import json
from typing import Any, Callable, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

OK, FAILED, BAD_INPUT, REFUSED = 0, 1, 2, 3

console = Console()
err_console = Console(stderr=True)

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
EnvOpt = typer.Option(..., "--env", "-e", help="target environment (from kepler.yaml)")
AsOpt = typer.Option(None, "--as", help="act as USER (where the identity mode allows)")
AfterFreezeOpt = typer.Option(False, "--after-freeze", help=(
    "during a freeze, wait for its end (a durable timer), then start"))
BreakGlassOpt = typer.Option(False, "--break-glass", help=(
    "go through a freeze with two approvers other than you (needs --reason)"))
# (train, scale and resources document --watch; the older commands show it bare)
WatchOpt = typer.Option(False, "--watch", help="follow the operation until it ends")


class CliError(Exception):
    """Stop the command with a message and an exit code."""

    def __init__(self, message: str, code: int = BAD_INPUT,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data or {}


def wants_json(output: str) -> bool:
    """The --output option: True for json; anything but text or json is bad input."""
    if output not in ("text", "json"):
        raise CliError("--output: must be text or json", BAD_INPUT)
    return output == "json"


def guarded(output: str, body: Callable[[], int | None]) -> NoReturn:
    """Run a command body; CliError becomes its message and exit code."""
    try:
        code = body()
    except CliError as e:
        fail(e, output == "json")
    raise typer.Exit(code or OK)


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def emit(data: Any, as_json: bool, text: Any = None) -> None:
    """Print `data` as JSON, or `text` (a string or a rich renderable) for people."""
    if as_json:
        typer.echo(json.dumps(jsonable(data), indent=2, default=str))
    elif text is not None:
        console.print(text)
    else:
        console.print_json(json.dumps(jsonable(data), default=str))


def fail(error: CliError, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": str(error), **jsonable(error.data)}, default=str))
    else:
        err_console.print(f"[red]error:[/red] {error}", highlight=False, markup=True)
    raise typer.Exit(error.code)
