"""`kepler decommission SERVICE [--reason TEXT]` and `kepler restore SERVICE`: taking a
service away everywhere, reversibly during its soak."""

from __future__ import annotations

from typing import Optional

import typer

from kepler import naming

from kepler.clients import operations as operations_client
from kepler.decommission import RestoreRequest
from kepler.models import DecommissionRequest
from starter import session
from starter.canary import control_signer
from starter.cli_common import BAD_INPUT, OK, AsOpt, CliError, command, emit


def register(app: typer.Typer) -> None:
    @command(app)
    def decommission(service: str, reason: str = "",
                     soak: str = typer.Option("24h", "--soak", help="reversible period, e.g. 24h"),
                     watch_it: bool = typer.Option(False, "--watch"),
                     as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Decommission SERVICE everywhere: approval always; routes off and replicas to 0,
        reversible with `kepler restore` during the soak; then deleted (GitLab archived)."""
        p = session.platform()
        req = session.build(DecommissionRequest, service=service, reason=reason, soak=soak,
                            requested_by=session.acting_user(p, as_user))
        if problem := p.decommission.soak_problem(req.soak):
            raise CliError("--" + problem, BAD_INPUT)
        return session.run(session.launch(p, req, watch_it, as_json))

    @command(app)
    def restore(service: str, reason: str = "", as_user: Optional[str] = AsOpt,
                *, as_json: bool) -> int:
        """Undo phase 1 of SERVICE's decommission during its soak: routes and replicas back
        (signed; by its requester or a decommission approver)."""
        p = session.platform()
        req = session.build(RestoreRequest, requested_by=session.acting_user(p, as_user),
                            reason=reason)

        async def go() -> str:
            return await operations_client.restore(await session.client(p), service, req,
                                                   control_signer(p, req.requested_by))

        result = session.run(go())
        workflow_id = naming.service_workflow_id(service)
        emit({"workflow_id": workflow_id, "result": result,
              "ui": session.ui_link(p, workflow_id)}, as_json, f"{workflow_id}: {result}")
        return OK
