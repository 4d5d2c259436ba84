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

from temporalio.client import (
    Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kepler import naming
from kepler import search_attributes as sa
from kepler.canary import CanaryReport
from kepler.decommission import DecommissionReport, RestoreRequest
from kepler.jobs import JobReport, RunJobRequest
from kepler.models import (
    ApprovalDecision, CanaryRequest, CreateServiceRequest, DecommissionRequest, OperationStatus,
    ReleaseReport, ReleaseRequest, RollbackRequest,
)
from kepler.scale import ResourcesRequest, ScaleReport, ScaleRequest
from kepler.train import TrainReport, TrainRequest


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
    DecommissionRequest: ("Decommission", "decommission"),
    CanaryRequest: ("Canary", "canary"),
}
RESULT_TYPE: dict[type, type] = {DecommissionRequest: DecommissionReport,
                                 CanaryRequest: CanaryReport}
WORKFLOW_FOR[RunJobRequest] = ("RunJob", "job")  # kepler job run
RESULT_TYPE[RunJobRequest] = JobReport
WORKFLOW_FOR.update({TrainRequest: ("ReleaseTrain", "train"), ScaleRequest: ("Scale", "scale"),
                     ResourcesRequest: ("SetResources", "resources")})
RESULT_TYPE.update({TrainRequest: TrainReport, ScaleRequest: ScaleReport,
                    ResourcesRequest: ScaleReport})


def _identity(req: Any) -> tuple[str, str, str, str]:
    if isinstance(req, CreateServiceRequest):
        return req.spec.name, "all", naming.service_workflow_id(req.spec.name), ""
    if isinstance(req, DecommissionRequest):
        return req.service, "all", naming.service_workflow_id(req.service), ""
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
    await _refuse_if_service_busy(client, req, service, env)
    try:
        handle = await client.start_workflow(
            workflow_name, req, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(attrs), static_summary=summary(req),
            result_type=RESULT_TYPE.get(type(req), ReleaseReport))
    except WorkflowAlreadyStartedError:
        raise Refused(await describe_running(client, workflow_id)) from None
    return Started(workflow_id, handle.result_run_id or "", handle)


async def _refuse_if_service_busy(client: Client, req: Any, service: str, env: str) -> None:
    """A decommission refuses while anything runs on the service; an operation in one
    environment refuses while the service-wide one (create, decommission) runs. The
    Decommission workflow checks again itself (this check is a courtesy: it answers at once)."""
    if isinstance(req, DecommissionRequest):
        query = f'{sa.SERVICE.name} = "{service}" AND ExecutionStatus = "Running"'
        try:
            async for execution in client.list_workflows(query, limit=5):
                if execution.id != naming.service_workflow_id(service):
                    raise Refused("refused: " + await describe_running(client, execution.id))
        except RPCError as e:
            if e.status != RPCStatusCode.UNIMPLEMENTED:  # a server without visibility
                raise
    elif env != "all":
        workflow_id = naming.service_workflow_id(service)
        try:
            desc = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return
        if desc.status == WorkflowExecutionStatus.RUNNING:
            raise Refused(await describe_running(client, workflow_id))


async def restore(client: Client, service: str, req: RestoreRequest) -> str:
    """Undo phase 1 of a soaking decommission; waits until routes and replicas are back."""
    workflow_id = naming.service_workflow_id(service)
    try:
        return await client.get_workflow_handle(workflow_id).execute_update(
            "restore", req, result_type=str)
    except WorkflowUpdateFailedError as e:
        raise Refused(getattr(e.cause, "message", None) or str(e.cause)) from None
    except RPCError as e:
        raise Refused(f"{workflow_id}: nothing to restore ({e.message})") from None


async def control(client: Client, service: str, env: str, verb: str, req: Any) -> str:
    """pause, resume, promote or abort the running canary; refused (exit 3) when no canary
    runs or it cannot do that now."""
    workflow_id = naming.workflow_id(service, env)
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError:
        raise Refused(f"{workflow_id}: no canary is running") from None
    if desc.status != WorkflowExecutionStatus.RUNNING or desc.workflow_type != "Canary":
        raise Refused(f"{workflow_id}: no canary is running")
    try:
        return await handle.execute_update(verb, req, result_type=str)
    except WorkflowUpdateFailedError as e:
        raise Refused(getattr(e.cause, "message", None) or str(e.cause)) from None
    except RPCError as e:
        raise Refused(f"{workflow_id}: cannot {verb} ({e.message})") from None


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
