"""Starting and steering operations through Temporal: what the CLI, chat-ops, the
Alertmanager receiver, the alert activity and tests share.

Which workflow an operation request starts, under which name and with which result
type comes from the registry (kepler/contracts.py). Its workflow id is its lock:
`<service>@<env>` ("env") or `<service>@all` ("service"), started with
WorkflowIDConflictPolicy.FAIL, so a second operation is refused while the first runs;
the refusal names the running operation, who started it and when. An operation with
an id of its own ("own": an alert's firing, a schedule's fire) is started once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, TypeVar

from temporalio.client import (
    Client, ScheduleActionStartWorkflow, WorkflowExecutionStatus, WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kepler import naming
from kepler import search_attributes as sa
from kepler.decommission import RestoreRequest
from kepler.models import ApprovalDecision, OperationStatus
from kepler.contracts import (
    APPROVE, BY_REQUEST, CANARY, CANARY_CONTROLS, DECOMMISSION, REJECT, RESTORE, STATUS, Query, Update,
)
from kepler.requests import OperationRequest, Subject
from kepler.clients.temporal import execution_info
from kepler.identity import SignedStatement, Statement, new_nonce, request_digest


class Refused(Exception):
    """The platform said no: a conflict, an unauthorised approver, nothing pending."""


@dataclass
class Started:
    workflow_id: str
    run_id: str
    handle: WorkflowHandle


def workflow_id(req: OperationRequest) -> str:
    """The id `req` starts under: its lock, or for "own" and "named", the request's own."""
    lock = BY_REQUEST[type(req)].lock
    who = req.subject()
    if lock == "env":
        return naming.workflow_id(who.service, who.env)
    if lock == "service":
        return naming.service_workflow_id(who.service)
    return req.own_workflow_id()


def request_statement(req: Any, now: datetime) -> Statement:
    """What the requester signs for `req`: the operation, where it runs, its exact content."""
    who = req.subject()
    return Statement(action="request", operation=BY_REQUEST[type(req)].operation,
                     service=who.service, env=who.env, workflow_id=workflow_id(req),
                     request_sha256=request_digest(req), comment=getattr(req, "reason", ""),
                     issued_at=now, nonce=new_nonce())


def approval_statement(status: OperationStatus, verdict: str, comment: str,
                       now: datetime) -> Statement:
    """What an approver signs: the pending gate's run, operation, digests and commits."""
    pending = status.pending_approval
    if pending is None:
        raise Refused(f"nothing is pending approval ({status.service}@{status.env} is "
                      f"{status.stage})")
    return Statement(action=verdict, operation=pending.operation, service=pending.service,
                     env=pending.env, workflow_id=pending.workflow_id, run_id=pending.run_id,
                     gate=pending.gate, digests=pending.digests, commits=pending.commits, comment=comment,
                     issued_at=now)


def start_attributes(req: Any) -> TypedSearchAttributes:
    """The search attributes every operation starts with, so the Temporal UI and
    `kepler history` show it at once; its workflow then keeps stage and outcome up to
    date."""
    who = req.subject()
    pairs = [SearchAttributePair(sa.SERVICE, who.service), SearchAttributePair(sa.ENV, who.env),
             SearchAttributePair(sa.OPERATION, BY_REQUEST[type(req)].operation),
             SearchAttributePair(sa.REQUESTED_BY, who.requested_by)]
    pairs += [SearchAttributePair(sa.STAGE, "starting"), SearchAttributePair(sa.OUTCOME, "running")]
    if who.version:
        pairs.append(SearchAttributePair(sa.VERSION, who.version))
    return TypedSearchAttributes(pairs)


def summary(req: OperationRequest) -> str:
    """One line for the Temporal UI (the workflow's static summary) and the starters."""
    return req.describe(BY_REQUEST[type(req)].operation)


async def start(client: Client, req: Any, task_queue: str) -> Started:
    """Start the operation `req` asks for; Refused while its lock is held, or, for an
    operation with an id of its own, when that id has already run."""
    op = BY_REQUEST[type(req)]
    wid = workflow_id(req)
    own = op.lock == "own"
    if op.lock in ("env", "service"):
        await _refuse_if_service_busy(client, req, req.subject())
    try:
        handle = await client.start_workflow(
            op.workflow, req, id=wid, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=(WorkflowIDReusePolicy.REJECT_DUPLICATE if own
                             else WorkflowIDReusePolicy.ALLOW_DUPLICATE),
            search_attributes=start_attributes(req), static_summary=summary(req),
            result_type=op.result)
    except WorkflowAlreadyStartedError:
        if own:
            raise Refused(f"{wid} has already started") from None
        raise Refused(await describe_running(client, wid)) from None
    return Started(wid, handle.result_run_id or "", handle)


def schedule_action(req: Any, task_queue: str) -> ScheduleActionStartWorkflow:
    """What a Temporal Schedule starts at each fire: the workflow, id, summary and search
    attributes `start` would give `req`."""
    return ScheduleActionStartWorkflow(
        BY_REQUEST[type(req)].workflow, req, id=workflow_id(req), task_queue=task_queue,
        static_summary=summary(req), typed_search_attributes=start_attributes(req))


async def _refuse_if_service_busy(client: Client, req: Any, who: Subject) -> None:
    """A decommission refuses while anything runs on the service; an operation in one
    environment refuses while the service-wide one (create, decommission) runs. The
    Decommission workflow checks again itself (this check is a courtesy: it answers at once)."""
    if BY_REQUEST[type(req)] is DECOMMISSION:
        query = f'{sa.SERVICE.name} = "{who.service}" AND ExecutionStatus = "Running"'
        try:
            async for execution in client.list_workflows(query, limit=5):
                if execution.id != naming.service_workflow_id(who.service):
                    raise Refused("refused: " + await describe_running(client, execution.id))
        except RPCError as e:
            if e.status != RPCStatusCode.UNIMPLEMENTED:  # a server without visibility
                raise
    elif who.env != "all":
        service_wide = naming.service_workflow_id(who.service)
        try:
            info = await execution_info(client, service_wide)
        except RPCError:
            return
        if info.status == WorkflowExecutionStatus.RUNNING:
            raise Refused(await describe_running(client, service_wide))


R = TypeVar("R")


async def query(handle: WorkflowHandle, message: Query[R]) -> R:
    """The registry's query `message` of the running (or closed) operation."""
    result: R = await handle.query(message.name, result_type=message.result)
    return result


async def update(handle: WorkflowHandle, message: Update[Any, str], arg: Any, when_absent: str) -> str:
    """Run the registry's update `message`; its validator's refusal, or `<id>: <when_absent>
    (why)` when the workflow is not there to take it, becomes Refused."""
    if not isinstance(arg, message.arg):
        raise TypeError(f"{message.name} takes a {message.arg.__name__}, not {type(arg).__name__}")
    try:
        return await handle.execute_update(message.name, arg, result_type=message.result)
    except WorkflowUpdateFailedError as e:
        raise Refused(getattr(e.cause, "message", None) or str(e.cause)) from None
    except RPCError as e:
        raise Refused(f"{handle.id}: {when_absent} ({e.message})") from None


# Signs a statement as the acting person (starter/canary.py control_signer: their key, or
# chat-ops' delegate key naming them).
Sign = Callable[[Statement], Awaitable[SignedStatement]]


def control_statement(verb: str, operation: str, service: str, env: str, workflow_id: str,
                      run_id: str, reason: str, now: datetime) -> Statement:
    """What a control (pause, resume, promote, abort, restore) signs: the verb for exactly
    the run that is running now."""
    return Statement(action=verb, operation=operation, service=service, env=env,
                     workflow_id=workflow_id, run_id=run_id, comment=reason, issued_at=now)


async def _signed_control(handle: WorkflowHandle, run_id: str, verb: str, operation: str,
                          service: str, env: str, req: Any, sign: Sign | None) -> Any:
    if sign is None:  # unsigned: refused by every run since signed controls
        return req
    statement = control_statement(verb, operation, service, env, handle.id, run_id, req.reason,
                                  datetime.now(timezone.utc))
    return req.model_copy(update={"signed": await sign(statement)})


async def restore(client: Client, service: str, req: RestoreRequest, sign: Sign | None = None) -> str:
    """Undo phase 1 of a soaking decommission, signed for the running run by `sign`; waits
    until routes and replicas are back."""
    handle = client.get_workflow_handle(naming.service_workflow_id(service))
    try:
        desc = await handle.describe()
    except RPCError as e:
        raise Refused(f"{handle.id}: nothing to restore ({e.message})") from None
    if desc.status != WorkflowExecutionStatus.RUNNING or desc.workflow_type != DECOMMISSION.workflow:
        raise Refused(f"{handle.id}: nothing to restore (no decommission is running)")
    req = await _signed_control(handle, desc.run_id, "restore", "decommission", service, "all",
                                req, sign)
    return await update(handle, RESTORE, req, "nothing to restore")


async def canary_running(handle: WorkflowHandle) -> bool:
    """Whether a canary (or a blue-green release, which runs as one) runs under `handle`'s id."""
    try:
        desc = await handle.describe()
    except RPCError:
        return False
    return desc.status == WorkflowExecutionStatus.RUNNING and desc.workflow_type == CANARY.workflow


async def control(client: Client, service: str, env: str, verb: str, req: Any,
                  sign: Sign | None = None) -> str:
    """pause, resume, promote or abort the running canary, signed for its running run by
    `sign`; refused (exit 3) when no canary runs, it cannot do that now, or the signer may
    not."""
    handle = client.get_workflow_handle(naming.workflow_id(service, env))
    try:
        desc = await handle.describe()
    except RPCError:
        raise Refused(f"{handle.id}: no canary is running") from None
    if desc.status != WorkflowExecutionStatus.RUNNING or desc.workflow_type != CANARY.workflow:
        raise Refused(f"{handle.id}: no canary is running")
    req = await _signed_control(handle, desc.run_id, verb, "canary", service, env, req, sign)
    return await update(handle, CANARY_CONTROLS[verb], req, f"cannot {verb}")


async def cancel(client: Client, workflow_id: str, nothing: str = "nothing is running") -> None:
    """Ask the running operation to cancel (it undoes what it did, then ends cancelled);
    Refused, saying `nothing`, when none runs under that id."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError:
        raise Refused(f"{workflow_id}: {nothing}") from None
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise Refused(f"{workflow_id}: {nothing}")
    await handle.cancel()


async def describe_running(client: Client, workflow_id: str) -> str:
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return f"{workflow_id} is busy with another operation"
    attrs = desc.typed_search_attributes
    operation = attrs.get(sa.OPERATION) or desc.workflow_type
    who = attrs.get(sa.REQUESTED_BY) or "someone"
    started: datetime = desc.start_time
    stage = attrs.get(sa.STAGE) or "running"
    return (f"{workflow_id} is busy: {operation} {attrs.get(sa.VERSION) or ''} started by {who} "
            f"at {started:%Y-%m-%d %H:%M:%S} UTC is {stage}").replace("  ", " ")


async def decide(client: Client, service: str, env: str, verdict: str,
                 decision: ApprovalDecision) -> str:
    """approve or reject; a refused approver gets the validator's reason."""
    handle = client.get_workflow_handle(naming.workflow_id(service, env))
    gate = {APPROVE.name: APPROVE, REJECT.name: REJECT}[verdict]
    return await update(handle, gate, decision, f"nothing to {verdict}")


async def status(client: Client, workflow_id: str) -> OperationStatus:
    return await query(client.get_workflow_handle(workflow_id), STATUS)
