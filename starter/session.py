"""What every operation command needs: the platform file, the acting user, a Temporal
client, validated requests, starting an operation and following it, and a way to turn
outcomes into exit codes."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, TypeVar

from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from kepler.clients import freezes as freeze_client

from kepler.clients import operations as operations_client
from kepler.freeze import refusal
from kepler.clients.freezes import FreezeLookupError
from kepler.models import OperationStatus
from kepler.clients.operations import Refused, Started
from kepler.settings import ConfigError, Platform, load_platform
from kepler.clients.temporal import connect
from kepler.validation import describe_validation_error, service_name
from starter.cli_common import BAD_INPUT, FAILED, OK, REFUSED, CliError, emit
from starter.watch import watch
from starter import signing

T = TypeVar("T")
# How `launch` reports a watched operation's end: (started, UI link, last status seen,
# as JSON) -> exit code.
Finish = Callable[[Started, str, OperationStatus | None, bool], Awaitable[int]]


def platform() -> Platform:
    try:
        return load_platform()
    except ConfigError as e:
        raise CliError(str(e), BAD_INPUT) from None


def acting_user(p: Platform, as_user: str | None) -> str:
    """Who is acting. In the sandbox (identity.sandbox_keys): --as, else KEPLER_USER, else
    `dev`, each signing with its key there. Elsewhere: the person identity.allowed_signers
    lists for your key (KEPLER_SIGNING_KEY), as git knows you by yours; KEPLER_USER only
    picks among several listed for it. The signature proves it (starter/signing.py)."""
    chosen = as_user or os.environ.get("KEPLER_USER") or None
    if p.identity.sandbox_keys:
        return chosen or signing.SANDBOX_USER
    if as_user:
        raise CliError("--as: only the sandbox picks a key by name (identity.sandbox_keys); "
                       "elsewhere you sign with your own key (KEPLER_SIGNING_KEY)", BAD_INPUT)
    try:
        return signing.key_owner(p, chosen)
    except (signing.SigningError, ConfigError) as e:
        raise CliError(str(e), BAD_INPUT) from None


def check_env(p: Platform, env: str, flag: str = "--env") -> None:
    if env not in p.environments:
        raise CliError(f"{flag}: unknown environment {env!r} (configured: "
                       f"{', '.join(sorted(p.environments))})", BAD_INPUT)


def check_service(service: str) -> None:
    """SERVICE, where it goes into an id or a visibility query before any request does."""
    try:
        service_name(service)
    except ValueError as e:
        raise CliError(f"service: {e}", BAD_INPUT) from None


def check_target(p: Platform, service: str, env: str) -> None:
    """SERVICE and --env of a command that addresses `<service>@<env>` (or `@all`)."""
    check_service(service)
    if env != "all":
        check_env(p, env)


def build(model: Callable[..., T], **fields: Any) -> T:
    """A validated request, or exit 2 naming the field and the rule."""
    try:
        return model(**fields)
    except ValidationError as e:
        raise CliError(describe_validation_error(e), BAD_INPUT) from None


def signed(p: Platform, req: T) -> T:
    """`req` signed by its requester's key, or exit 2 saying why it cannot be."""
    try:
        return signing.sign_request(p, req)
    except signing.SigningError as e:
        raise CliError(str(e), BAD_INPUT) from None


def ui_link(p: Platform, workflow_id: str, run_id: str = "") -> str:
    base = f"{p.temporal.ui_url.rstrip('/')}/namespaces/{p.temporal.namespace}/workflows/{workflow_id}"
    return f"{base}/{run_id}/history" if run_id else base


async def client(p: Platform) -> Client:
    try:
        options = p.temporal.connect_options()
    except ConfigError as e:
        raise CliError(str(e), BAD_INPUT) from None
    try:
        return await asyncio.wait_for(connect(p.temporal.address, p.temporal.namespace, **options),
                                      15)
    except (RPCError, RuntimeError, asyncio.TimeoutError, OSError) as e:
        raise CliError(f"cannot reach Temporal at {p.temporal.address}: {e} "
                       "(is `kepler dev up` running?)", FAILED) from None


async def launch(p: Platform, req: Any, watch_it: bool, as_json: bool, hint: str = "",
                 finish: Finish | None = None) -> int:
    """Start the operation `req`. Without --watch, print its id and UI link (and `hint`);
    with it, follow it to its end and report the outcome (`finish` reports it its own way)."""
    req = signed(p, req)
    temporal = await client(p)
    await refuse_if_frozen(temporal, p, req)
    started = await operations_client.start(temporal, req, p.temporal.task_queue)
    link = ui_link(p, started.workflow_id, started.run_id)
    if not watch_it:
        text = f"started [bold]{started.workflow_id}[/bold] ({operations_client.summary(req)})"
        emit({"workflow_id": started.workflow_id, "run_id": started.run_id, "ui": link}, as_json,
             f"{text}\n{link}" + (f"\n{hint}" if hint else ""))
        return OK
    last = await watch(started.handle) if not as_json else None
    if finish is not None:
        return await finish(started, link, last, as_json)
    try:
        report = await started.handle.result()
    except Exception as e:  # noqa: BLE001 - the failure is the operation's outcome
        # the status as it ended: the watch's last may predate the end (a query refused)
        status = await _status_or_none(temporal, started.workflow_id) or last
        message = status.error if status and status.error else str(e)
        code = (BAD_INPUT if status and status.bad_input else
                REFUSED if status and status.refused else FAILED)
        raise CliError(message, code, {"workflow_id": started.workflow_id, "ui": link,
                                       "outcome": status.outcome if status else "failed"}) from None
    emit({"workflow_id": started.workflow_id, "ui": link, "report": report}, as_json,
         f"[green]{report.outcome}[/green]  {link}")
    return OK


async def refuse_if_frozen(temporal: Client, p: Platform, req: Any) -> None:
    """The fast answer (exit 3) before a release, promotion, canary or train starts into a
    freeze (README: Freeze windows); the workflow checks again itself."""
    if not hasattr(req, "after_freeze") or req.after_freeze or getattr(req, "break_glass", False):
        return
    try:
        frozen = await freeze_client.current(temporal, p, req.env, datetime.now(timezone.utc))
    except FreezeLookupError as e:
        raise CliError(str(e), FAILED) from None
    if frozen is not None:
        raise Refused(refusal(frozen))


def start_operation(as_json: bool, env: str, as_user: str | None, watch_it: bool,
                    model: Callable[..., Any], **fields: Any) -> int:
    """The whole of a command that starts one operation in ENV: `model(env=ENV,
    requested_by=the acting user, **fields)`, launched (see `launch`)."""
    p = platform()
    check_env(p, env)
    if fields.get("from_env") is not None:
        check_env(p, fields["from_env"], "--from")
    req = build(model, env=env, requested_by=acting_user(p, as_user), **fields)
    return run(launch(p, req, watch_it, as_json))


async def follow(p: Platform, handle: Any, as_json: bool, ok: tuple[str, ...] = ("rolled_back",)) -> int:
    """Follow a running operation that something else started to its end; exit 0 when its
    outcome is one of `ok` (a switch-back ends rolled_back), else as `launch` says."""
    temporal = await client(p)
    last = await watch(handle) if not as_json else None
    try:
        await handle.result()
    except Exception:  # noqa: BLE001 - the outcome is in its status
        pass
    status = await _status_or_none(temporal, handle.id) or last
    outcome = status.outcome if status else "failed"
    link = ui_link(p, handle.id, "")
    if outcome not in ok and outcome != "succeeded":
        raise CliError(status.error if status and status.error else outcome, FAILED,
                       {"workflow_id": handle.id, "ui": link, "outcome": outcome})
    emit({"workflow_id": handle.id, "ui": link, "outcome": outcome,
          "error": status.error if status else ""}, as_json,
         f"[green]{outcome}[/green]: {status.error if status else ''}  {link}")
    return OK


async def _status_or_none(temporal: Client, workflow_id: str) -> OperationStatus | None:
    try:
        return await operations_client.status(temporal, workflow_id)
    except RPCError:
        return None


def serve(server: Callable[[Platform, str, int], None], not_configured: type[Exception],
          host: str, port: int) -> int:
    """`kepler chatops|alerts`: run the endpoint until stopped; exit 2 when it is not
    configured (`not_configured` says what is missing)."""
    p = platform()
    try:
        server(p, host, port)
    except not_configured as e:
        raise CliError(str(e), BAD_INPUT) from None
    return OK


def run(coro: Awaitable[T]) -> T:
    """Run one command's coroutine, mapping Kepler's refusals and failures to exit codes."""
    async def guarded() -> T:
        try:
            return await coro
        except Refused as e:
            raise CliError(str(e), REFUSED) from None
        except WorkflowFailureError as e:
            cause = e.cause
            while getattr(cause, "cause", None) is not None and not getattr(cause, "message", ""):
                cause = cause.cause
            raise CliError(getattr(cause, "message", str(cause)), FAILED) from None

    return asyncio.run(guarded())
