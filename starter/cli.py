"""The `kepler` command line (DESIGN §5). Command forms are a contract."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from kepler.settings import ConfigError, load_platform
from starter import dev as devstack
from starter.output import BAD_INPUT, FAILED, CliError, emit, fail

app = typer.Typer(help="Kepler: durable delivery pipelines on Temporal.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
dev_app = typer.Typer(help="The local stack: Temporal dev server, sandbox, worker.",
                      no_args_is_help=True)
app.add_typer(dev_app, name="dev")

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")


def _json(output: str) -> bool:
    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--output")
    return output == "json"


def _platform():
    try:
        return load_platform()
    except ConfigError as e:
        raise CliError(str(e), BAD_INPUT) from None


@dev_app.command("up")
def dev_up(output: str = OutputOpt) -> None:
    """Start the Temporal dev server, the sandbox and a worker (idempotent)."""
    as_json = _json(output)
    try:
        state = devstack.up(_platform())
    except CliError as e:
        fail(e, as_json)
    except RuntimeError as e:
        fail(CliError(str(e), FAILED), as_json)
    emit(state, as_json, _describe(state))


@dev_app.command("down")
def dev_down(output: str = OutputOpt) -> None:
    """Stop what `kepler dev up` started, and nothing else."""
    as_json = _json(output)
    result = devstack.down()
    emit(result, as_json, "stopped: " + (", ".join(result["stopped"]) or "nothing was running"))


@dev_app.command("status")
def dev_status(output: str = OutputOpt) -> None:
    """Show every component of the local stack and its URLs."""
    as_json = _json(output)
    state = devstack.status()
    emit(state, as_json, _describe(state))


def _describe(state: dict) -> str:
    lines = []
    for name, item in state.items():
        mark = "[green]running[/green]" if item.get("running") else "[red]stopped[/red]"
        lines.append(f"{name:9} {mark}")
        if item.get("address"):
            lines.append(f"          frontend {item['address']}")
        if item.get("ui"):
            lines.append(f"          UI       {item['ui']}")
        for sub, url in (item.get("urls") or {}).items():
            lines.append(f"          {sub:10} {url}")
        if item.get("task_queue"):
            lines.append(f"          task queue {item['task_queue']}")
    return "\n".join(lines)


@app.command()
def worker() -> None:
    """Run a worker with every workflow and activity (stops cleanly on SIGTERM/SIGINT)."""
    import worker as worker_module

    try:
        load_platform()
    except ConfigError as e:
        fail(CliError(str(e), BAD_INPUT), False)
    worker_module.main()


def _register_operations() -> None:
    from starter import commands, commands_decommission

    commands.register(app)
    commands_decommission.register(app)
    from starter import codec_server

    codec_server.register(app)


_register_operations()


def main() -> None:
    """Entry point. Exits with the command's real code even if the Temporal SDK's
    runtime would crash at interpreter exit (temporalio/sdk-python#300)."""
    code = 0
    try:
        result = app(standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as e:  # click's usage errors (typer vendors click): show, exit 2
        if not (hasattr(e, "show") and hasattr(e, "exit_code")):
            raise
        e.show()
        code = e.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
