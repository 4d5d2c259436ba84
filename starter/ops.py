"""Starting and steering operations: what the CLI, the chat bot and tests share.

Every mutating workflow of one service in one environment has the id
`<service>@<env>` and starts with WorkflowIdConflictPolicy.FAIL, so a second one
is refused while the first runs; the refusal names the running operation, who
started it and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from kepler import naming
from kepler import search_attributes as sa
from kepler.models import (
    ApprovalDecision, CreateServiceRequest, OperationStatus, ReleaseReport, ReleaseRequest,
    RollbackRequest,
)


class Refused(Exception):
    """The platform said no: a conflict, an unauthorised approver, nothing pending."""


@dataclass
class Started:
    workflow_id: str
    run_id: str
    handle: WorkflowHandle


WORKFLOW_FOR = {
    ReleaseRequest: ("ReleaseVersion", "release"),
    RollbackRequest: ("Rollback", "rollback"),
    CreateServiceRequest: ("CreateService", "create"),
}


def _identity(req: Any) -> tuple[str, str, str, str]:
    if isinstance(req, CreateServiceRequest):
        return req.spec.name, "all", naming.service_workflow_id(req.spec.name), ""
    version = getattr(req, "ref", "") or getattr(req, "target", "")
    return req.service, req.env, naming.workflow_id(req.service, req.env), version


def summary(req: Any) -> str:
    service, env, _, version = _identity(req)
    kind = WORKFLOW_FOR[type(req)][1]
    text = f"{kind} {service}" + (f" {version}" if version else "") + (f" to {env}" if env != "all" else "")
    return text + f" by {req.requested_by}" + (f": {req.reason}" if req.reason else "")


async def start(client: Client, req: Any, task_queue: str) -> Started:
    workflow_name, operation = WORKFLOW_FOR[type(req)]
    service, env, workflow_id, version = _identity(req)
    attrs = [SearchAttributePair(sa.SERVICE, service), SearchAttributePair(sa.ENV, env),
             SearchAttributePair(sa.OPERATION, operation),
             SearchAttributePair(sa.REQUESTED_BY, req.requested_by),
             SearchAttributePair(sa.STAGE, "starting"), SearchAttributePair(sa.OUTCOME, "running")]
    if version:
        attrs.append(SearchAttributePair(sa.VERSION, version))
    try:
        handle = await client.start_workflow(
            workflow_name, req, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(attrs), static_summary=summary(req),
            result_type=ReleaseReport)
    except WorkflowAlreadyStartedError:
        raise Refused(await describe_running(client, workflow_id)) from None
    return Started(workflow_id, handle.result_run_id or "", handle)


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
    try:
        return await handle.execute_update(verdict, decision, result_type=str)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        raise Refused(getattr(cause, "message", None) or str(cause)) from None
    except RPCError as e:
        raise Refused(f"{naming.workflow_id(service, env)}: nothing to {verdict} ({e.message})") from None


async def status(client: Client, workflow_id: str) -> OperationStatus:
    return await client.get_workflow_handle(workflow_id).query("status", result_type=OperationStatus)
