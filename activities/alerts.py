"""Temporal, for alert-driven rollback: start a Rollback on the `<service>@<env>` lock, or,
when an operation already holds it, abort it if it is a canary.

Starting goes through kepler.clients.operations.start, the same function the CLI and chat
bot use, so the lock, the refusal while a service-wide operation runs and the search
attributes are the same. The Rollback runs on the task queue of the worker that runs this activity.
"""

from __future__ import annotations


from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.errors import non_retryable, retryable
from kepler import naming
from kepler.clients import operations as operations_client
from kepler import search_attributes as sa
from kepler.canary import CanaryControl
from kepler.contracts import ABORT, CANARY, ROLLBACK
from kepler.alerts import AlertActionRequest, AlertOutcome, rollback_of
from kepler.settings import Platform
from kepler.clients.temporal import LazyClient


class AlertActivities:
    def __init__(self, platform: Platform | None, client: Client | None = None) -> None:
        self.platform = platform
        self._temporal = LazyClient(platform.temporal if platform else None, client)

    async def client(self) -> Client:
        return await self._temporal.get()

    @activity.defn(name="alerts.act")
    async def act(self, req: AlertActionRequest) -> AlertOutcome:
        workflow_id = naming.workflow_id(req.service, req.env)
        rollback = rollback_of(req)
        if req.rollback is not None:  # signed by the receiver (the action's signature covers it)
            if req.rollback.model_copy(update={"signed": None}) != rollback:
                raise non_retryable("InvalidInput", "the signed rollback is not this alert's")
            rollback = req.rollback
        client = await self.client()
        why = rollback.reason
        try:
            started = await operations_client.start(client, rollback, activity.info().task_queue)
            return AlertOutcome(action="rollback_started", workflow_id=started.workflow_id,
                                detail=f"started a rollback of {req.service} in {req.env} to the "
                                       f"previous version ({started.workflow_id})")
        except operations_client.Refused as refused:
            busy = str(refused)
        except RPCError as e:
            raise retryable(f"start rollback {workflow_id}: {e.message}") from None
        return await self._busy(client, req, workflow_id, busy, why)

    async def _busy(self, client: Client, req: AlertActionRequest, workflow_id: str,
                    busy: str, why: str) -> AlertOutcome:
        handle = client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError:
            return AlertOutcome(action="busy", workflow_id=workflow_id,
                                detail=f"{busy}; no rollback started")
        running = desc.status == WorkflowExecutionStatus.RUNNING
        attrs = desc.typed_search_attributes
        if running and activity.info().attempt > 1 and desc.workflow_type == ROLLBACK.workflow and \
                attrs.get(sa.REQUESTED_BY) == req.requested_by:
            return AlertOutcome(action="rollback_started", workflow_id=workflow_id,
                                detail=f"rollback of {req.service} in {req.env} running "
                                       f"({workflow_id})")  # started by an earlier attempt
        if running and desc.workflow_type == CANARY.workflow and req.abort_canary:
            try:
                # the action's own signed request is what lets the receiver abort
                result = await handle.execute_update(
                    ABORT.name, CanaryControl(by=req.requested_by, reason=why[:500],
                                              signed=req.signed), result_type=str)
            except WorkflowUpdateFailedError as e:
                reason = getattr(e.cause, "message", None) or str(e.cause)
                return AlertOutcome(action="busy", workflow_id=workflow_id,
                                    detail=f"the canary {workflow_id} refused abort: {reason}")
            except RPCError as e:
                raise retryable(f"abort {workflow_id}: {e.message}") from None
            return AlertOutcome(action="canary_aborted", workflow_id=workflow_id,
                                detail=f"aborted the canary {workflow_id}: {result}")
        return AlertOutcome(action="busy", workflow_id=workflow_id,
                            detail=f"{busy}; no rollback started (the running operation keeps "
                                   "the lock)")
