"""What the console asks a passkey to sign, and sends once signed: approve and reject a
pending gate, pause / resume / promote / abort a canary, create a service.

Two steps, as WebAuthn has them. `/actions/prepare` builds the exact statement the CLI
would sign (kepler/clients/operations.py) and returns it with the WebAuthn options whose
challenge is its digest, in a token only this console makes. `/actions/submit` takes the
token and the browser's assertion and sends the same update or start the CLI sends, with
the statement signed by the passkey. The console verifies nothing on anyone's behalf: the
workflow verifies the assertion against the enrolled passkey (and refuses, naming the
rule, anything forged, for another digest or run, or used before).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.service import RPCError

from kepler import naming
from kepler.canary import CanaryControl
from kepler.clients import operations as operations_client
from kepler.identity import SignedStatement, Statement
from kepler.models import ApprovalDecision, CreateServiceRequest
from kepler.passkeys import PasskeyError, assertion_from_browser, authentication_options, challenge_of
from kepler.spec import ServiceSpec
from kepler.validation import describe_validation_error, service_name
from starter.console.app import Console, Problem, json_body
from starter.console.auth import BadToken, Viewer
from starter.console.signin import relying_party, signers

PREPARED_TTL = timedelta(minutes=5)
VERDICTS = ("approve", "reject")
CONTROLS = ("pause", "resume", "promote", "abort")


def _text(body: dict[str, Any], name: str, limit: int = 500) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise Problem(f"{name}: text of at most {limit} characters")
    return value


def _target(console: Console, body: dict[str, Any]) -> tuple[str, str]:
    service, env = _text(body, "service", 63), _text(body, "env", 63)
    try:
        service_name(service)
    except ValueError as e:
        raise Problem(f"service: {e}") from None
    if env not in console.platform.environments:
        raise Problem(f"env: unknown environment {env!r}")
    return service, env


async def prepare(console: Console, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
    """The statement for `body["action"]` and what submit needs besides the assertion."""
    action = _text(body, "action", 20)
    client = await console.client.get()
    now = datetime.now(timezone.utc)
    comment = _text(body, "comment")
    if action in VERDICTS:
        service, env = _target(console, body)
        try:
            state = await operations_client.status(client, naming.workflow_id(service, env))
        except RPCError:
            raise Problem(f"nothing is pending approval for {service} in {env}", 409) from None
        try:
            statement = operations_client.approval_statement(state, action, comment, now)
        except operations_client.Refused as e:
            raise Problem(str(e), 409) from None
        return {"statement": statement, "service": service, "env": env}
    if action in CONTROLS:
        service, env = _target(console, body)
        handle = client.get_workflow_handle(naming.workflow_id(service, env))
        try:
            desc = await handle.describe()
        except RPCError:
            raise Problem(f"no canary is running for {service} in {env}", 409) from None
        statement = operations_client.control_statement(action, "canary", service, env, handle.id,
                                                        desc.run_id, comment, now)
        return {"statement": statement, "service": service, "env": env}
    if action == "create":
        spec = body.get("spec")
        try:
            req = CreateServiceRequest(spec=ServiceSpec.model_validate(spec), reason=comment,
                                       requested_by=viewer.person)
        except ValidationError as e:
            raise Problem(describe_validation_error(e)) from None
        for env in req.spec.environments:
            if env not in console.platform.environments:
                raise Problem(f"spec.environments: unknown environment {env!r}")
        statement = operations_client.request_statement(req, now)
        return {"statement": statement, "request": req.model_dump(mode="json")}
    raise Problem(f"action: one of {', '.join((*VERDICTS, *CONTROLS, 'create'))}, not {action!r}")


async def submit(console: Console, viewer: Viewer, prepared: dict[str, Any],
                 signed: SignedStatement) -> str:
    action = prepared["action"]
    client = await console.client.get()
    try:
        if action in VERDICTS:
            decision = ApprovalDecision(approver=viewer.person, comment=signed.statement.comment,
                                        signed=signed)
            return await operations_client.decide(client, prepared["service"], prepared["env"],
                                                  action, decision)
        if action in CONTROLS:
            async def already_signed(_: Statement) -> SignedStatement:
                return signed
            req = CanaryControl(by=viewer.person, reason=signed.statement.comment)
            return await operations_client.control(client, prepared["service"], prepared["env"],
                                                   action, req, already_signed)
        req = CreateServiceRequest.model_validate(prepared["request"]).model_copy(
            update={"signed": signed})
        started = await operations_client.start(client, req, console.platform.temporal.task_queue)
        return f"started {started.workflow_id}"
    except operations_client.Refused as e:
        raise Problem(str(e), 409) from None


def routes(console: Console) -> list[BaseRoute]:
    def viewer_of(request: Request) -> Viewer:
        viewer = console.viewer(request)
        if viewer is None:
            raise Problem("sign in first", 401)
        return viewer

    async def prepare_route(request: Request) -> Response:
        viewer = viewer_of(request)
        body = await json_body(request, console)
        rp = relying_party(console)
        prepared = await prepare(console, viewer, body)
        statement: Statement = prepared.pop("statement")
        mine = [k.credential_id for k in signers(console).passkeys if k.person == viewer.person]
        token = console.tokens.make("action", {
            "action": body["action"], "viewer": viewer.person,
            "statement": statement.model_dump(mode="json"), **prepared}, PREPARED_TTL)
        return JSONResponse({"token": token, "statement": statement.model_dump(mode="json"),
                             "options": authentication_options(
                                 rp.rp_id, challenge_of(statement.canonical()), mine)})

    async def submit_route(request: Request) -> Response:
        viewer = viewer_of(request)
        body = await json_body(request, console)
        try:
            prepared = console.tokens.read("action", str(body.get("token", "")))
            assertion = assertion_from_browser(json.dumps(body.get("credential")))
        except (BadToken, PasskeyError) as e:
            raise Problem(str(e), 400) from None
        if prepared["viewer"] != viewer.person:
            raise Problem("this action was prepared for someone else's session", 403)
        signed = SignedStatement(statement=Statement.model_validate(prepared["statement"]),
                                 passkey=assertion)
        return JSONResponse({"result": await submit(console, viewer, prepared, signed)})

    return [Route("/actions/prepare", prepare_route, methods=["POST"]),
            Route("/actions/submit", submit_route, methods=["POST"])]
