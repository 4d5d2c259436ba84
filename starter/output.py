"""How the CLI speaks: rich text for people, JSON for scripts, and the exit codes."""

from __future__ import annotations

import json
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console

OK, FAILED, BAD_INPUT, REFUSED = 0, 1, 2, 3

console = Console()
err_console = Console(stderr=True)


class CliError(Exception):
    """Stop the command with a message and an exit code."""

    def __init__(self, message: str, code: int = BAD_INPUT, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.data = data or {}


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def emit(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(data), indent=2, default=str))
    elif text is not None:
        console.print(text)
    else:
        console.print_json(json.dumps(jsonable(data), default=str))


def fail(error: CliError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": str(error), **jsonable(error.data)}, default=str))
    else:
        err_console.print(f"[red]error:[/red] {error}", highlight=False, markup=True)
    raise typer.Exit(error.code)
