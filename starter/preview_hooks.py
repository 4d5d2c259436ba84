"""GitLab's Merge Request Hook: POST /gitlab/merge-requests, which wakes previews up.

Add it to the service's project (or its group) as a webhook with "Merge request events"
and a secret token, the value of KEPLER_GITLAB_HOOK_TOKEN: GitLab sends it as
X-Gitlab-Token; a request without it gets 401 and changes nothing, and without a token
configured the receiver refuses to start. A body over 256 KiB gets 413, one that is not
a merge request hook payload 400 (naming the field).

An event is only a hint (kepler/previews.py): open, update and reopen signal-with-start
the merge request's Preview workflow (`preview/<service>/<iid>`), which then reads the
merge request from GitLab; merge and close signal it only if it runs. Everything else
(other hooks, other projects, other actions, previews off) is answered 200 "ignored"
with the reason, since GitLab disables a hook whose deliveries keep failing. Temporal
unreachable: 503, so GitLab retries.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, cast

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from kepler.clients import operations as operations_client
from kepler.clients.temporal import LazyClient
from kepler.contracts import MERGE_REQUEST, PREVIEW
from kepler.previews import (
    MAX_MR_IID, MergeRequestAction, MergeRequestEvent, PreviewRequest, preview_workflow_id,
)
from kepler.settings import Platform, Secrets
from kepler.validation import describe_validation_error, service_name
from starter.http_body import BodyTooLarge, read_body

log = logging.getLogger("kepler.previews")
MAX_BODY = 256 * 1024  # a description can be long, and GitLab sends it whole
HOOK_EVENT = "Merge Request Hook"
STARTS = frozenset({"open", "update", "reopen"})  # may start a preview
ENDS = frozenset({"merge", "close"})  # only wake a running one
SHA1 = frozenset("0123456789abcdef")


class NotConfigured(Exception):
    """No token: the endpoint refuses to run unauthenticated."""


class Unreachable(Exception):
    """The first connection to Temporal failed."""


class _Fields(BaseModel):
    model_config = ConfigDict(extra="ignore")  # GitLab sends much more, and adds fields


class _Project(_Fields):
    path_with_namespace: str = Field(max_length=1000)


class _LastCommit(_Fields):
    id: str = Field("", max_length=100)


class _Attributes(_Fields):
    iid: StrictInt = Field(ge=1, le=MAX_MR_IID)
    action: str = Field("", max_length=100)  # absent from some GitLab versions' events
    last_commit: _LastCommit | None = None


class MergeRequestHook(_Fields):
    """The fields of GitLab's Merge Request Hook payload the receiver reads."""
    project: _Project
    object_attributes: _Attributes


def head_sha(hook: MergeRequestHook) -> str:
    """The pushed head, when it is a SHA-1 id; else "" (the preview reads the head from
    GitLab anyway, so a SHA-256 repository's id is no reason to refuse the event)."""
    sha = hook.object_attributes.last_commit.id if hook.object_attributes.last_commit else ""
    return sha if len(sha) == 40 and set(sha) <= SHA1 else ""


class Reply(Exception):
    """An answer given before acting: a refusal, or an event ignored."""

    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.answer = status, answer


def ignored(reason: str) -> dict[str, Any]:
    return {"result": "ignored", "reason": reason}


def printable(text: str, limit: int) -> str:
    """`text` cut to `limit`, without control characters (it goes into log lines)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


async def read_hook(request: Request) -> MergeRequestHook:
    """The merge request hook in `request`, or Reply: 413, 400 naming the field, or 200
    ignored for another kind of hook."""
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge as e:
        raise Reply(413, {"error": str(e)}) from None
    kind = request.headers.get("x-gitlab-event", "")
    if kind != HOOK_EVENT:
        raise Reply(200, ignored("not a merge request hook: "
                                 f"{printable(kind, 60) or 'no X-Gitlab-Event'}"))
    try:
        payload = json.loads(body)
    except ValueError as e:
        raise Reply(400, {"error": f"not JSON: {e}"}) from None
    if not isinstance(payload, dict):
        raise Reply(400, {"error": "not a merge request hook payload: not a JSON object"})
    if payload.get("object_kind") != "merge_request":
        kind = printable(str(payload.get("object_kind")), 60)
        raise Reply(200, ignored(f"object_kind is {kind}, not merge_request"))
    try:
        return MergeRequestHook.model_validate(payload)
    except ValidationError as e:
        raise Reply(400, {"error": "not a merge request hook payload: "
                          + describe_validation_error(e)}) from None


class MergeRequestReceiver(Starlette):
    def __init__(self, platform: Platform, token: str,
                 client: Client | Callable[[], Awaitable[Client]] | None = None) -> None:
        if not token:
            raise NotConfigured("KEPLER_GITLAB_HOOK_TOKEN is not set: the merge request hook "
                                "refuses to run without authenticating requests")
        self.platform, self.token = platform, token.encode()
        self._temporal = LazyClient(platform.temporal, client)
        super().__init__(routes=[
            Route("/gitlab/merge-requests", self.receive, methods=["POST"]),
            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=["GET"]),
        ])

    def authorised(self, request: Request) -> bool:
        given = request.headers.get("x-gitlab-token", "")
        return hmac.compare_digest(given.encode(), self.token)

    async def receive(self, request: Request) -> JSONResponse:
        uuid = printable(request.headers.get("x-gitlab-event-uuid", ""), 64)
        delivery = f" (delivery {uuid})" if uuid else ""  # GitLab's id of this delivery
        if not self.authorised(request):
            log.warning("previews: refused an unauthenticated hook from %s%s",
                        request.client.host if request.client else "?", delivery)
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        about = "a hook"
        try:
            hook = await read_hook(request)
            attrs = hook.object_attributes
            about = (f"{printable(hook.project.path_with_namespace, 200)}!{attrs.iid} "
                     f"{printable(attrs.action, 30) or '(no action)'}")
            status, answer = 200, await self.act(hook)
        except Reply as r:
            status, answer = r.status, r.answer
        except (RPCError, Unreachable) as e:
            message = e.message if isinstance(e, RPCError) else str(e)
            status, answer = 503, {"error": f"Temporal unavailable: {message}"}
        outcome = answer.get("error") or answer["result"]
        detail = answer.get("reason") or answer.get("workflow_id") or ""
        log.log(logging.ERROR if status >= 500 else logging.INFO, "previews: %s%s: %d %s%s",
                about, delivery, status, outcome, f": {detail}" if detail else "")
        return JSONResponse(answer, status_code=status)

    async def act(self, hook: MergeRequestHook) -> dict[str, Any]:
        """Start or signal the merge request's preview, or say why not (Reply)."""
        attrs = hook.object_attributes
        path = printable(hook.project.path_with_namespace, 200)
        group, _, service = hook.project.path_with_namespace.rpartition("/")
        if group != self.platform.gitlab.group:
            raise Reply(200, ignored(f"project {path} is not in group "
                                     f"{self.platform.gitlab.group}"))
        try:
            service_name(service)
        except ValueError as e:
            raise Reply(200, ignored(f"project {path}: not a service name: {e}")) from None
        if self.platform.previews.env is None:
            raise Reply(200, ignored("previews are off (no previews.env in kepler.yaml)"))
        if attrs.action not in STARTS | ENDS:
            raise Reply(200, ignored(f"action {printable(attrs.action, 30) or '(none)'}: "
                                     "nothing for a preview to do"))
        event = MergeRequestEvent(action=cast(MergeRequestAction, attrs.action),
                                  sha=head_sha(hook), at=datetime.now(timezone.utc))
        if attrs.action in STARTS:
            return await self.start(service, attrs.iid, event)
        return await self.wake(service, attrs.iid, event)

    async def client(self) -> Client:
        try:
            return await self._temporal.get()
        except RuntimeError as e:  # temporalio's "Failed client connect"
            raise Unreachable(str(e)) from None

    async def start(self, service: str, mr: int, event: MergeRequestEvent) -> dict[str, Any]:
        """Signal the preview, starting it first unless it runs (one RPC: no race with a
        second delivery or with the preview ending)."""
        req = PreviewRequest(service=service, mr=mr)
        client = await self.client()
        handle = await client.start_workflow(
            PREVIEW.workflow, req, id=preview_workflow_id(service, mr),
            task_queue=self.platform.temporal.task_queue, start_signal=MERGE_REQUEST.name,
            start_signal_args=[event], id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=operations_client.start_attributes(req),
            static_summary=operations_client.summary(req))
        return {"result": "signalled", "workflow_id": handle.id,
                "run_id": handle.result_run_id or ""}

    async def wake(self, service: str, mr: int, event: MergeRequestEvent) -> dict[str, Any]:
        """Signal the preview if it runs; an ended merge request never starts one."""
        wid = preview_workflow_id(service, mr)
        client = await self.client()
        try:
            await client.get_workflow_handle(wid).signal(MERGE_REQUEST.name, event)
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            return ignored(f"no preview runs for {wid}")  # none ever ran, or its last one ended
        return {"result": "signalled", "workflow_id": wid}


def create_app(platform: Platform, secrets: Secrets | None = None,
               client: Client | Callable[[], Awaitable[Client]] | None = None) -> Starlette:
    token = (secrets or Secrets()).gitlab_hook_token
    return MergeRequestReceiver(platform, token.get_secret_value() if token else "", client)


def serve(platform: Platform, host: str, port: int) -> None:
    """Serve the receiver until stopped; NotConfigured without KEPLER_GITLAB_HOOK_TOKEN."""
    import uvicorn

    from kepler.telemetry import configure_logging

    configure_logging()  # else what each delivery did (logged at info) is lost
    app = create_app(platform)
    uvicorn.run(app, host=host, port=port, log_level="info")
