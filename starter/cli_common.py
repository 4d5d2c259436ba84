"""How the CLI speaks: the options every command shares, rich text for people, JSON
for scripts, the exit codes, and `command`, the one way a command is declared."""

from __future__ import annotations

import functools
import inspect
import json
import os
import typing
from typing import Any, Callable, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

OK, FAILED, BAD_INPUT, REFUSED = 0, 1, 2, 3
OFF_TERMINAL_WIDTH = 200  # what a table may take in a log, where nothing wraps it

# rich decides whether stdout is a terminal; off one (a pipe, a file, a CI log) it writes no
# colour codes, and Kepler draws no boxes and no live view either (`plain`), and breaks no
# line to fit a width nobody sees (a table keeps to COLUMNS, when set).
console = Console()
err_console = Console(stderr=True)
for _stream in (console, err_console):
    if not _stream.is_terminal:
        _stream.soft_wrap = True
        if "COLUMNS" not in os.environ:
            _stream.width = OFF_TERMINAL_WIDTH

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
EnvOpt = typer.Option(..., "--env", "-e", help="target environment (from kepler.yaml)")
AsOpt = typer.Option(None, "--as", help="act as USER (where the identity mode allows)")
AfterFreezeOpt = typer.Option(False, "--after-freeze", help=(
    "during a freeze, wait for its end (a durable timer), then start"))
BreakGlassOpt = typer.Option(False, "--break-glass", help=(
    "go through a freeze with two approvers other than you (needs --reason)"))
# (train, scale and resources document --watch; the older commands show it bare)
WatchOpt = typer.Option(False, "--watch", help="follow the operation until it ends")


def plain() -> bool:
    """True off a terminal: output is written line by line, as kubectl's and git's are."""
    return not console.is_terminal


def subject_app(help: str, **options: Any) -> typer.Typer:
    """A command group. Help is click's plain help: each paragraph of a docstring rewrapped
    to the width, no panels (typer's rich help keeps a docstring's line breaks)."""
    return typer.Typer(help=help, short_help=first_sentence(help), rich_markup_mode=None,
                       **options)


def first_sentence(doc: str | None) -> str:
    """A docstring's first sentence on one line: the command's entry in its group's help
    (click would cut it at the width, with "...")."""
    words = inspect.cleandoc(doc or "").split("\n\n")[0].split()
    ends = [i for i, word in enumerate(words) if word.endswith(".")]
    return " ".join(words[:ends[0] + 1] if ends else words)


def new_table(title: str | None = None, **options: Any) -> Table:
    """A table for people: boxed on a terminal; off one, columns only, the title on its own
    line above them, as `kubectl get` prints."""
    options.setdefault("header_style", "bold")
    if plain():
        options.update(box=None, show_edge=False, pad_edge=False, title_justify="left")
    return Table(title=title, **options)


def section(title: str) -> None:
    """A new section of a long report (the demo's steps): a rule on a terminal; off one, a
    blank line and the title on a line of its own."""
    if plain():
        console.print(f"\n== {title} ==", markup=False, highlight=False, soft_wrap=True)
    else:
        console.rule(f"[bold]{title}")


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
        err_console.print(Text.assemble(("error:", "red"), f" {error}"), highlight=False)
    raise typer.Exit(error.code)


# The attribute `command` sets on what it registers (tests/cli/test_command.py walks the app).
COMMAND_MARK = "__kepler_command__"
_GROUP_CONTEXT = "_kepler_group_context"


def command(app: typer.Typer, name: str | None = None, *, output: bool = True,
            callback: bool = False, **typer_options: Any,
            ) -> Callable[[Callable[..., int | None]], Callable[..., None]]:
    """Declare a command of `app`: its name (`name`, else the function's) and help (the
    docstring); with `output`, the `--output text|json` option, given to the function as
    `as_json: bool` in the place of its `as_json` parameter; its exit code (what it returns,
    None for OK); and a CliError becoming its message (JSON with --output json) and code.
    With `callback`, it is `app`'s group callback, which runs only when no subcommand is
    given. `typer_options` go to typer's `command` or `callback` as they are."""
    def register(func: Callable[..., int | None]) -> Callable[..., None]:
        wrapper = _wrap(func, output, callback)
        if callback:
            app.callback(**typer_options)(wrapper)
        else:
            typer_options.setdefault("short_help", first_sentence(func.__doc__))
            app.command(name, **typer_options)(wrapper)
        return wrapper
    return register


def _wrap(func: Callable[..., int | None], output: bool, callback: bool) -> Callable[..., None]:
    hints = typing.get_type_hints(func)
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in inspect.signature(func).parameters.values()]
    names = [p.name for p in params]
    if output != ("as_json" in names):
        raise TypeError(f"{func.__qualname__}: a command with output takes as_json, "
                        "one without does not")
    if output:  # in its place, so that --help lists the options in the same order
        at = names.index("as_json")
        params[at] = params[at].replace(name="output", default=OutputOpt, annotation=str)
    if callback:  # typer hands a typer.Context to the parameter annotated so
        params.insert(0, inspect.Parameter(
            _GROUP_CONTEXT, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context))
    signature = inspect.signature(func).replace(parameters=params, return_annotation=None)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        arguments = signature.bind(*args, **kwargs).arguments
        if callback and arguments.pop(_GROUP_CONTEXT).invoked_subcommand is not None:
            return  # the subcommand runs instead
        as_json = False
        try:
            if output:
                as_json = wants_json(arguments.pop("output"))
                arguments["as_json"] = as_json
            code = func(**arguments)
        except CliError as e:
            fail(e, as_json)
        raise typer.Exit(code or OK)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]  # typer reads this one
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    setattr(wrapper, COMMAND_MARK, True)
    return wrapper
