"""Chat-ops: a Slack-compatible ASGI endpoint, served by `kepler chatops`.

POST /slack/commands      `/kepler release shop --env prod --ref v2 --reason "..."` etc.,
                          the same grammar as the CLI
POST /slack/interactions  the approve/reject buttons of "awaiting approval" messages

Every request is verified with Slack's signing secret (v0 HMAC-SHA256 over
`v0:{timestamp}:{body}`, timestamp at most 5 minutes old, constant-time compare,
each signature accepted once); anything else gets 401 and changes nothing. Slack
users act as the Kepler identity `chatops.users` maps them to; unmapped users are
refused. Everything goes through kepler/clients/operations.py, the same functions and
workflow updates as the CLI, so the approval validators (four eyes) hold here too.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import shlex
import time
from typing import Any, Awaitable, Callable, NoReturn
from urllib.parse import parse_qs

import httpx
import typer
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError

from kepler import naming

from kepler.clients import operations as operations_client
from kepler.decommission import RestoreRequest
from kepler.canary import CanaryControl
from kepler.models import (
    ApprovalDecision, CanaryRequest, DecommissionRequest, ReleaseRequest, RollbackRequest,
)
from kepler.settings import Platform, Secrets
from kepler.clients.temporal import LazyClient
from kepler.validation import describe_validation_error, service_name
from starter import session, signing
from starter.canary import control_signer
from starter.cli_common import CliError, command
from kepler.identity import DELEGATE
from starter.http_body import BodyTooLarge, read_body

log = logging.getLogger("kepler.chatops")
MAX_AGE = 300  # seconds
MAX_BODY = 64 * 1024  # a slash command or a button press is a few KiB
CONTROLS = ("pause", "resume", "promote", "abort")
VERBS = ("release", "rollback", "canary", *CONTROLS, "status", "approve", "reject",
         "decommission", "restore")
USAGE = """*Kepler commands* (the CLI's grammar):
`release SERVICE --env ENV --ref REF [--reason TEXT]`
`rollback SERVICE --env ENV [--to previous|VERSION|sha256:DIGEST] [--reason TEXT]`
`status SERVICE --env ENV|all`
`approve|reject SERVICE --env ENV|all [--comment TEXT]`
`decommission SERVICE [--reason TEXT]`   `restore SERVICE [--reason TEXT]`
`canary SERVICE --env ENV --ref REF [--steps 10,20,50] [--interval 1m] [--reason TEXT]`
`pause|resume|promote|abort SERVICE --env ENV [--reason TEXT]`"""


class NotConfigured(Exception):
    """The endpoint cannot run safely: no signing secret."""


class BadInput(Exception):
    pass


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # never exit the server
        raise BadInput(message)


def _parser(verb: str) -> _Parser:
    p = _Parser(prog=verb, add_help=False)
    p.add_argument("service")
    if verb in ("release", "rollback", "canary", "status", "approve", "reject", *CONTROLS):
        p.add_argument("--env", "-e", required=True)
    if verb in ("release", "canary"):
        p.add_argument("--ref", required=True)
    if verb == "canary":
        p.add_argument("--steps", default=None)
        p.add_argument("--interval", default="1m")
    if verb == "rollback":
        p.add_argument("--to", default="previous")
    if verb in ("release", "rollback", "canary", "decommission", "restore", *CONTROLS):
        p.add_argument("--reason", default="")
    if verb in ("approve", "reject"):
        p.add_argument("--comment", default="")
        p.add_argument("--run", default="", help=argparse.SUPPRESS)  # a button's: that run only
    return p


class ChatOps:
    def __init__(self, platform: Platform, secret: str,
                 client: Client | Callable[[], Awaitable[Client]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.platform, self.secret, self.clock = platform, secret.encode(), clock
        # the bot's own key: it signs, as a delegate, for the Slack user it verified
        self.key = (platform.identity.path(platform.chatops.signing_key)
                    if platform.chatops.signing_key else None)
        self._temporal = LazyClient(platform.temporal, client)
        self._seen: dict[str, float] = {}
        self.app = Starlette(routes=[
            Route("/slack/commands", self.commands, methods=["POST"]),
            Route("/slack/interactions", self.interactions, methods=["POST"]),
            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=["GET"]),
        ])

    async def client(self) -> Client:
        return await self._temporal.get()

    # --- verification --------------------------------------------------------------------

    def verify(self, request: Request, body: bytes) -> str | None:
        """None if genuine; otherwise why not (for the log, never for the caller)."""
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        given = request.headers.get("x-slack-signature", "")
        if not timestamp or not given:
            return "unsigned"
        try:
            age = abs(self.clock() - int(timestamp))
        except ValueError:
            return "bad timestamp"
        if age > MAX_AGE:
            return "stale timestamp"
        if not hmac.compare_digest(signature(self.secret, timestamp, body), given):
            return "bad signature"
        now = self.clock()
        self._seen = {s: t for s, t in self._seen.items() if now - t <= MAX_AGE * 2}
        if given in self._seen:
            return "replayed"
        self._seen[given] = now
        return None

    def identity(self, slack_user: str) -> str | None:
        return self.platform.chatops.users.get(slack_user)

    # --- endpoints -----------------------------------------------------------------------

    async def commands(self, request: Request) -> JSONResponse | PlainTextResponse:
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge as e:  # before reading it, let alone checking its signature
            return PlainTextResponse(str(e), status_code=413)
        problem = self.verify(request, body)
        if problem:
            log.warning("chatops: rejected a command request: %s", problem)
            return PlainTextResponse("invalid request signature", status_code=401)
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        slack_user = form.get("user_id", "")
        user = self.identity(slack_user)
        if user is None:
            return reply(f":no_entry: refused: Slack user {slack_user or '(none)'} is not mapped "
                         "to a Kepler identity (chatops.users in kepler.yaml); nothing was done")
        text = form.get("text", "").strip()
        log.info("chatops: %s (%s): /kepler %s", slack_user, user, text)
        return reply(await self.run(user, text, f"slack:{slack_user}"))

    async def interactions(self, request: Request) -> JSONResponse | PlainTextResponse:
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge as e:  # before reading it, let alone checking its signature
            return PlainTextResponse(str(e), status_code=413)
        problem = self.verify(request, body)
        if problem:
            log.warning("chatops: rejected an interaction: %s", problem)
            return PlainTextResponse("invalid request signature", status_code=401)
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
            action = payload["actions"][0]
            slack_user = payload["user"]["id"]
        except (KeyError, IndexError, ValueError, TypeError):
            return reply(":warning: not an interaction payload Kepler understands")
        user = self.identity(slack_user)
        if user is None:
            text = (f":no_entry: refused: Slack user {slack_user} is not mapped to a Kepler "
                    "identity (chatops.users in kepler.yaml); nothing was done")
        elif action.get("action_id") not in ("kepler_approve", "kepler_reject"):
            text = f":warning: unknown action {action.get('action_id')!r}"
        else:
            verb = "approve" if action["action_id"] == "kepler_approve" else "reject"
            target, _, run = str(action.get("value", "")).partition("/")
            service, _, env = target.partition("@")
            log.info("chatops: %s (%s): button %s %s@%s", slack_user, user, verb, service, env)
            text = await self.run(user, f"{verb} {shlex.quote(service)} --env {shlex.quote(env)}"
                                  + (f" --run {shlex.quote(run)}" if run else ""), f"slack:{slack_user}")
        response_url = payload.get("response_url", "")
        task = None
        if response_url.startswith(self.platform.chatops.response_url_prefix):
            task = BackgroundTask(self._follow_up, response_url, text)
        return reply(text, background=task)

    @staticmethod
    async def _follow_up(url: str, text: str) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                await http.post(url, json={"response_type": "ephemeral",
                                           "replace_original": False, "text": text})
        except httpx.HTTPError as e:
            log.warning("chatops: follow-up to Slack failed: %s", type(e).__name__)

    # --- commands ------------------------------------------------------------------------

    async def run(self, user: str, text: str, via: str = "slack:?") -> str:
        try:
            words = shlex.split(text.replace("\u201c", '"').replace("\u201d", '"'))
        except ValueError as e:
            return f":warning: bad input: {e}\n{USAGE}"
        if not words or words[0] in ("help", "-h", "--help"):
            return USAGE
        verb, rest = words[0], words[1:]
        if verb not in VERBS:
            return f":warning: unknown command {verb!r}\n{USAGE}"
        try:
            args = _parser(verb).parse_args(rest)
            args.via = via
            service_name(args.service)
            env = getattr(args, "env", "all")
            if env != "all" and env not in self.platform.environments:
                raise BadInput(f"--env: unknown environment {env!r} (configured: "
                               f"{', '.join(sorted(self.platform.environments))})")
            if env == "all" and verb in ("release", "rollback", "canary", *CONTROLS):
                raise BadInput("--env: name one environment")
            if verb in CONTROLS:
                return await self._control(user, args, verb)
            return await getattr(self, "_" + verb)(user, args)
        except BadInput as e:
            return f":warning: bad input: {e}\n`{_parser(verb).format_usage().strip()}`"
        except ValidationError as e:
            return f":warning: bad input: {describe_validation_error(e)}"
        except ValueError as e:  # service_name
            return f":warning: bad input: service: {e}"
        except operations_client.Refused as e:
            return f":no_entry: refused: {e}"
        except RPCError as e:
            return f":x: Temporal answered: {e.message}"

    def link(self, workflow_id: str) -> str:
        t = self.platform.temporal
        return f"<{t.ui_url.rstrip('/')}/namespaces/{t.namespace}/workflows/{workflow_id}|{workflow_id}>"

    def _vouch(self, user: str, a: argparse.Namespace) -> dict[str, Any]:
        """How the bot signs for `user`: its own delegate key, naming who and through what."""
        if self.key is None:
            raise BadInput("chat-ops has no signing key (chatops.signing_key in kepler.yaml): "
                           "it cannot vouch for you; use the kepler CLI")
        return {"key": self.key, "namespace": DELEGATE, "on_behalf_of": f"{user} via {a.via}"}

    async def _start(self, req: Any, a: argparse.Namespace) -> str:
        try:
            req = await asyncio.to_thread(signing.sign_request, self.platform, req,
                                          **self._vouch(req.requested_by, a))
        except signing.SigningError as e:
            return f":x: could not sign the request: {e}"
        started = await operations_client.start(await self.client(), req,
                                                self.platform.temporal.task_queue)
        summary = operations_client.summary(req)
        return f":rocket: started {summary}\n{self.link(started.workflow_id)}"

    async def _release(self, user: str, a: argparse.Namespace) -> str:
        return await self._start(ReleaseRequest(service=a.service, env=a.env, ref=a.ref,
                                                reason=a.reason, requested_by=user), a)

    async def _rollback(self, user: str, a: argparse.Namespace) -> str:
        return await self._start(RollbackRequest(service=a.service, env=a.env, target=a.to,
                                                 reason=a.reason, requested_by=user), a)

    async def _canary(self, user: str, a: argparse.Namespace) -> str:
        steps = None
        if a.steps is not None:
            try:
                steps = [int(part) for part in a.steps.split(",") if part.strip()]
            except ValueError:
                raise BadInput(f"--steps: must be comma-separated weights such as 10,20,50 "
                               f"(got {a.steps!r})") from None
        return await self._start(CanaryRequest(service=a.service, env=a.env, ref=a.ref,
                                               steps=steps, interval=a.interval,
                                               reason=a.reason, requested_by=user), a)

    def _signer(self, user: str, a: argparse.Namespace) -> operations_client.Sign:
        """The bot signs a control as a delegate naming `user`, as it signs requests."""
        return control_signer(self.platform, user, **self._vouch(user, a))

    async def _control(self, user: str, a: argparse.Namespace, verb: str) -> str:
        try:
            result = await operations_client.control(await self.client(), a.service, a.env, verb,
                                                     CanaryControl(by=user, reason=a.reason),
                                                     self._signer(user, a))
        except CliError as e:  # the bot's key could not sign
            return f":x: could not sign the {verb}: {e}"
        workflow_id = naming.workflow_id(a.service, a.env)
        log.info("chatops: %s %s %s: %s", user, verb, workflow_id, result)
        return f":traffic_light: {workflow_id}: {result}\n{self.link(workflow_id)}"

    async def _decommission(self, user: str, a: argparse.Namespace) -> str:
        return await self._start(DecommissionRequest(service=a.service, reason=a.reason,
                                                     requested_by=user), a)

    async def _approve(self, user: str, a: argparse.Namespace, verb: str = "approve") -> str:
        ApprovalDecision(approver=user, comment=a.comment)  # bad input before signing
        try:
            result = await signing.decide(await self.client(), self.platform, a.service, a.env,
                                          verb, user, a.comment, run_id=a.run, **self._vouch(user, a))
        except signing.SigningError as e:
            return f":x: could not sign the decision: {e}"
        workflow_id = naming.workflow_id(a.service, a.env)
        log.info("chatops: %s %s %s: %s", user, verb, workflow_id, result)
        return f":white_check_mark: {workflow_id}: {result} by {user}\n{self.link(workflow_id)}"

    async def _reject(self, user: str, a: argparse.Namespace) -> str:
        return await self._approve(user, a, "reject")

    async def _restore(self, user: str, a: argparse.Namespace) -> str:
        try:
            result = await operations_client.restore(
                await self.client(), a.service, RestoreRequest(requested_by=user, reason=a.reason),
                self._signer(user, a))
        except CliError as e:  # the bot's key could not sign
            return f":x: could not sign the restore: {e}"
        workflow_id = naming.service_workflow_id(a.service)
        return f":leftwards_arrow_with_hook: {workflow_id}: {result}\n{self.link(workflow_id)}"

    async def _status(self, user: str, a: argparse.Namespace) -> str:
        workflow_id = naming.workflow_id(a.service, a.env)
        try:
            s = await operations_client.status(await self.client(), workflow_id)
        except RPCError:
            return f":grey_question: {workflow_id}: no operation found"
        lines = [f"*{workflow_id}*: {s.operation.value} {s.version} by {s.requested_by}: "
                 f"*{s.outcome}* (stage: {s.stage})".replace("  ", " ")]
        if s.pending_approval:
            p = s.pending_approval
            lines.append(f"awaiting approval by one of {', '.join(p.approvers)} "
                         f"({len(p.approvals)}/{p.min_approvals}) before {p.deadline:%Y-%m-%d %H:%M} UTC")
        lines += [f"• {st.name}: {st.outcome}" + (f" ({st.detail})" if st.detail else "")
                  for st in s.steps[-6:]]
        if s.error:
            lines.append(f"error: {s.error}")
        lines.append(self.link(workflow_id))
        return "\n".join(lines)


def reply(text: str, background: BackgroundTask | None = None) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "text": text}, background=background)


def create_app(platform: Platform, secrets: Secrets | None = None,
               client: Client | Callable[[], Awaitable[Client]] | None = None) -> Starlette:
    secret = (secrets or Secrets()).slack_signing_secret
    if secret is None or not secret.get_secret_value():
        raise NotConfigured("KEPLER_SLACK_SIGNING_SECRET is not set: chat-ops refuses to run "
                            "without verifying requests")
    return ChatOps(platform, secret.get_secret_value(), client).app


def serve(platform: Platform, host: str, port: int) -> None:
    import uvicorn

    app = create_app(platform)
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    @command(app, output=False)
    def chatops(host: str = typer.Option("127.0.0.1", "--host"),
                port: int = typer.Option(8300, "--port")) -> int:
        """Serve the Slack-compatible chat-ops endpoint (/slack/commands, /slack/interactions);
        the signing secret comes from KEPLER_SLACK_SIGNING_SECRET."""
        return session.serve(serve, NotConfigured, host, port)
