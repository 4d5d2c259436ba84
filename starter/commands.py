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
    service_app = typer.Typer(help="Create, show and list services.", no_args_is_help=True)
    app.add_typer(service_app, name="service")

    @service_app.command("create")
    def service_create(file: str = typer.Option(..., "-f", "--file", help="service spec YAML"),
                       watch: bool = False, output: str = OutputOpt) -> None:
        """Create a service: GitLab project, Jenkins job, namespaces, routes."""
        _not_built("service create", 5, output)

    @service_app.command("show")
    def service_show(service: str, output: str = OutputOpt) -> None:
        """Show a service's spec and what runs in each environment."""
        _not_built("service show", 5, output)

    @service_app.command("list")
    def service_list(output: str = OutputOpt) -> None:
        """List the services Kepler manages."""
        _not_built("service list", 5, output)

    @app.command()
    def demo(output: str = OutputOpt) -> None:
        """Run the demo against the sandbox: create, release, approve, bad release, canary."""
        _not_built("demo", 5, output)

    @app.command()
    def release(service: str, env: str = EnvOpt, ref: str = typer.Option(..., "--ref"),
                reason: str = "", watch: bool = False, as_user: Optional[str] = typer.Option(None, "--as"),
                output: str = OutputOpt) -> None:
        """Release a git ref of SERVICE to ENV."""
        _not_built("release", 5, output)

    @app.command()
    def rollback(service: str, env: str = EnvOpt, to: str = typer.Option("previous", "--to"),
                 reason: str = "", watch: bool = False, output: str = OutputOpt) -> None:
        """Roll SERVICE back in ENV to the previous release, a version or a digest."""
        _not_built("rollback", 5, output)

    @app.command()
    def canary(service: str, env: str = EnvOpt, ref: str = typer.Option(..., "--ref"),
               steps: Optional[str] = None, interval: str = "1m", watch: bool = False,
               output: str = OutputOpt) -> None:
        """Run a canary of REF for SERVICE in ENV, shifting traffic step by step."""
        _not_built("canary", 6, output)

    for verb in ("pause", "resume", "promote", "abort"):
        def control(service: str, env: str = EnvOpt, output: str = OutputOpt, _verb: str = verb) -> None:
            _not_built(_verb, 6, output)
        control.__doc__ = f"{verb.capitalize()} the running canary of SERVICE in ENV."
        app.command(verb)(control)

    for verb in ("approve", "reject"):
        def decide(service: str, env: str = EnvOpt, comment: str = "", output: str = OutputOpt,
                   _verb: str = verb) -> None:
            _not_built(_verb, 5, output)
        decide.__doc__ = f"{verb.capitalize()} the pending approval of SERVICE in ENV."
        app.command(verb)(decide)

    @app.command()
    def decommission(service: str, reason: str = "", output: str = OutputOpt) -> None:
        """Decommission SERVICE (approval always; reversible during the soak)."""
        _not_built("decommission", 7, output)

    @app.command()
    def restore(service: str, output: str = OutputOpt) -> None:
        """Undo phase 1 of a decommission during its soak period."""
        _not_built("restore", 7, output)

    @app.command()
    def status(service: str, env: str = EnvOpt, output: str = OutputOpt) -> None:
        """Show the running or last operation on SERVICE in ENV."""
        _not_built("status", 5, output)

    @app.command()
    def history(service: str, env: Optional[str] = typer.Option(None, "--env", "-e"),
                output: str = OutputOpt) -> None:
        """List past operations on SERVICE."""
        _not_built("history", 5, output)

    @app.command()
    def cancel(service: str, env: str = EnvOpt, output: str = OutputOpt) -> None:
        """Cancel the running operation on SERVICE in ENV (it compensates first)."""
        _not_built("cancel", 5, output)

    @app.command()
    def chatops(host: str = "127.0.0.1", port: int = 8300) -> None:
        """Serve the Slack-compatible chat-ops endpoint."""
        _not_built("chatops", 7, "text")
