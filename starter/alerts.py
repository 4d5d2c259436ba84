"""The Alertmanager webhook: POST /alertmanager, served by `kepler alerts`.

Point an Alertmanager `webhook_config` at it with
`http_config: {authorization: {credentials_file: <a file holding KEPLER_ALERTMANAGER_TOKEN>}}`
(deploy/alertmanager/alertmanager.yaml). Requests
without that bearer token get 401 and change nothing; a body that is not a version 4
webhook payload gets 400. Each alert is triaged against `alerts.rollback` in
kepler.yaml (kepler/alerts.py); each one that acts starts an AlertAction workflow whose
id is made of the alert's fingerprint and startsAt, so a redelivery does nothing new.
The answer lists what happened to each alert (Alertmanager only needs the 2xx; the
list is for people reading its logs and for tests). Temporal unreachable: 503, so
Alertmanager retries.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any, Awaitable, Callable

import typer
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from kepler.clients import operations as operations_client
from kepler.alerts import AlertActionRequest, WebhookPayload, rollback_of, triage
from kepler.identity import SYSTEM
from kepler.settings import Platform, Secrets
from kepler.clients.temporal import LazyClient
from kepler.validation import describe_validation_error
from starter import session, signing
from starter.cli_common import command
from starter.http_body import BodyTooLarge, read_body

log = logging.getLogger("kepler.alerts")
MAX_BODY = 64 * 1024  # Alertmanager batches a few alerts a request
WAIT_FOR_OUTCOME_S = 5.0


class NotConfigured(Exception):
    """No token: the endpoint refuses to run unauthenticated."""


class AlertReceiver:
    def __init__(self, platform: Platform, token: str,
                 client: Client | Callable[[], Awaitable[Client]] | None = None,
                 wait_for_outcome: float = WAIT_FOR_OUTCOME_S) -> None:
        self.platform, self.token = platform, token.encode()
        self.wait_for_outcome = wait_for_outcome
        key = platform.alerts.signing_key
        self.key = platform.identity.path(key) if key else None
        if self.key is not None and not self.key.is_file():
            raise NotConfigured(f"alerts.signing_key: no key at {self.key}")
        self._temporal = LazyClient(platform.temporal, client)
        self.app = Starlette(routes=[
            Route("/alertmanager", self.receive, methods=["POST"]),
            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=["GET"]),
        ])

    async def client(self) -> Client:
        return await self._temporal.get()

    def signed(self, req: AlertActionRequest) -> AlertActionRequest:
        """The action and the rollback it starts, signed by the receiver's own (system) key,
        so that the rollback's requester is verified (needed where it must be approved)."""
        if self.key is None:
            return req
        rollback = signing.sign_request(self.platform, rollback_of(req), self.key, SYSTEM)
        return signing.sign_request(self.platform, req.model_copy(update={"rollback": rollback}),
                                    self.key, SYSTEM)

    def authorised(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    async def receive(self, request: Request) -> JSONResponse:
        if not self.authorised(request):
            log.warning("alerts: refused an unauthenticated request from %s",
                        request.client.host if request.client else "?")
            return JSONResponse({"error": "unauthorized"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge as e:
            return JSONResponse({"error": str(e)}, status_code=413)
        try:
            payload = WebhookPayload.model_validate(json.loads(body))
        except ValueError as e:  # JSON and pydantic errors; nothing is done
            detail = describe_validation_error(e) if isinstance(e, ValidationError) else str(e)
            return JSONResponse({"error": f"not an Alertmanager v4 webhook payload: {detail}"},
                                status_code=400)
        envs = sorted(self.platform.environments)
        results: list[dict[str, Any]] = []
        try:
            for alert in payload.alerts:
                action, why = triage(alert, self.platform.alerts, envs)
                entry: dict[str, Any] = {"fingerprint": alert.fingerprint,
                                         "alertname": alert.labels.get("alertname", "")}
                if action is None:
                    entry.update(action="ignored", reason=why)
                else:
                    entry.update(await self.act(action))
                results.append(entry)
        except RPCError as e:
            log.error("alerts: Temporal unavailable: %s", e.message)
            return JSONResponse({"error": f"Temporal unavailable: {e.message}",
                                 "results": results}, status_code=503)
        log.info("alerts: %s from %s: %s", payload.status, payload.receiver,
                 "; ".join(f"{r['fingerprint']}: {r['action']}" for r in results))
        return JSONResponse({"results": results})

    async def act(self, req: AlertActionRequest) -> dict[str, Any]:
        client = await self.client()
        req = await asyncio.to_thread(self.signed, req)
        try:  # the id is the alert's fingerprint and startsAt: it starts once
            started = await operations_client.start(client, req, self.platform.temporal.task_queue)
        except operations_client.Refused:
            return {"action": "duplicate", "workflow_id": operations_client.workflow_id(req),
                    "reason": "this firing alert was already handled: nothing new is done"}
        entry: dict[str, Any] = {"action": "handling", "workflow_id": started.workflow_id}
        try:
            outcome = await asyncio.wait_for(started.handle.result(), self.wait_for_outcome)
        except asyncio.TimeoutError:
            return entry  # still running; its history says what it did
        except WorkflowFailureError as e:
            return {**entry, "action": "failed", "reason": str(e.cause)}
        return {**entry, "action": outcome.action, "target": outcome.workflow_id,
                "reason": outcome.detail}


def create_app(platform: Platform, secrets: Secrets | None = None,
               client: Client | Callable[[], Awaitable[Client]] | None = None,
               wait_for_outcome: float = WAIT_FOR_OUTCOME_S) -> Starlette:
    token = (secrets or Secrets()).alertmanager_token
    if token is None or not token.get_secret_value():
        raise NotConfigured("KEPLER_ALERTMANAGER_TOKEN is not set: the alert endpoint refuses "
                            "to run without authenticating requests")
    return AlertReceiver(platform, token.get_secret_value(), client, wait_for_outcome).app


def serve(platform: Platform, host: str, port: int) -> None:
    import uvicorn

    from kepler.telemetry import configure_logging

    configure_logging()  # else what each notification did (logged at info) is lost
    app = create_app(platform)
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    @command(app, output=False)
    def alerts(host: str = typer.Option("127.0.0.1", "--host"),
               port: int = typer.Option(8301, "--port")) -> int:
        """Serve POST /alertmanager: Alertmanager webhooks (bearer token from
        KEPLER_ALERTMANAGER_TOKEN) that roll back per the alerts policy in kepler.yaml."""
        return session.serve(serve, NotConfigured, host, port)
