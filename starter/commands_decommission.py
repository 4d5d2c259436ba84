"""`kepler decommission SERVICE [--reason TEXT]`, `kepler restore SERVICE` and
`kepler chatops [--host H] [--port P]` (DESIGN §5)."""

from __future__ import annotations

from typing import Optional

import typer

from kepler import naming
from kepler.decommission import RestoreRequest
from kepler.models import DecommissionRequest
from starter import ops, session
from starter.commands_ops import _json, guarded, launch
from starter.output import BAD_INPUT, OK, CliError, emit

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
AsOpt = typer.Option(None, "--as", help="act as USER (where the identity mode allows)")


def register(app: typer.Typer) -> None:
    @app.command()
    def decommission(service: str, reason: str = "",
                     soak: str = typer.Option("24h", "--soak", help="reversible period, e.g. 24h"),
                     watch_it: bool = typer.Option(False, "--watch"),
                     as_user: Optional[str] = AsOpt, output: str = OutputOpt) -> None:
        """Decommission SERVICE everywhere: approval always; routes off and replicas to 0,
        reversible with `kepler restore` during the soak; then deleted (GitLab archived)."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            req = session.build(DecommissionRequest, service=service, reason=reason, soak=soak,
                                requested_by=session.acting_user(p, as_user))
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)

    @app.command()
    def restore(service: str, reason: str = "", as_user: Optional[str] = AsOpt,
                output: str = OutputOpt) -> None:
        """Undo phase 1 of SERVICE's decommission during its soak: routes and replicas back."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            req = session.build(RestoreRequest, requested_by=session.acting_user(p, as_user),
                                reason=reason)

            async def go() -> str:
                return await ops.restore(await session.client(p), service, req)

            result = session.run(go())
            workflow_id = naming.service_workflow_id(service)
            emit({"workflow_id": workflow_id, "result": result,
                  "ui": session.ui_link(p, workflow_id)}, as_json, f"{workflow_id}: {result}")
            return OK
        guarded(output, body)

    @app.command()
    def chatops(host: str = typer.Option("127.0.0.1", "--host"),
                port: int = typer.Option(8300, "--port")) -> None:
        """Serve the Slack-compatible chat-ops endpoint (/slack/commands, /slack/interactions);
        the signing secret comes from KEPLER_SLACK_SIGNING_SECRET."""
        def body() -> int:
            from starter import chatops as chatops_module

            p = session.platform()
            try:
                chatops_module.serve(p, host, port)
            except chatops_module.NotConfigured as e:
                raise CliError(str(e), BAD_INPUT) from None
            return OK
        guarded("text", body)
