"""The operation commands of DESIGN §5. Those not built yet say so and exit 2."""

from __future__ import annotations

from typing import Optional

import typer

from starter.output import BAD_INPUT, CliError, fail

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
EnvOpt = typer.Option(..., "--env", "-e", help="target environment (from kepler.yaml)")


def _not_built(command: str, issue: int, output: str) -> None:
    fail(CliError(f"`kepler {command}` is not built yet (issue #{issue}); nothing was done",
                  BAD_INPUT), output == "json")


def register(app: typer.Typer) -> None:
    from starter import commands_ops

    commands_ops.register(app)
    from starter import commands_jobs

    commands_jobs.register(app)
    from starter import commands_fleet, commands_schedule

    commands_fleet.register(app)
    commands_schedule.register(app)
    from starter import commands_canary

    commands_canary.register(app)

    @app.command()
    def demo(as_user: Optional[str] = typer.Option(None, "--as"), output: str = OutputOpt) -> None:
        """Run the demo against the sandbox: create, release, approve, bad release, canary."""
        from starter import demo as demo_module
        from starter import session
        from starter.output import console

        try:
            p = session.platform()
            user = as_user or __import__("os").environ.get("KEPLER_USER") or "dev"
            links = session.run(demo_module.demo(p, user))
        except CliError as e:
            fail(e, output == "json")
        console.rule("[bold]done")
        console.print(f"Temporal UI: {p.temporal.ui_url}")
        for link in links:
            console.print(link)
