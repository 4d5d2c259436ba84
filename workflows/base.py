"""What every Kepler workflow shares: steps with timings, the saga, the approval gate,
the `status` query and the search attributes the UI filters on.

Deterministic only: no I/O, no wall clock (workflow.now()), no randomness.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from kepler import search_attributes as sa
    from kepler.models import (
        ApprovalDecision, Operation, OperationStatus, Outcome, PendingApproval, StepRecord,
    )
    from kepler.settings import ApprovalPolicy
    from activities.notify import Notification, NotifyActivities
    import workflows.metrics as metrics


# workflow.patched id: search attributes written only when they change, quick steps' stage
# with the next write (histories from before keep one write per stage).
COALESCED_SEARCH_ATTRIBUTES = "kepler-coalesced-search-attributes"


@dataclass(frozen=True)
class StepOptions:
    # Short, so a call lost with a crashed worker is retried elsewhere within seconds;
    # each HTTP call inside has its own 15 s timeout.
    start_to_close: timedelta = timedelta(seconds=30)
    heartbeat: timedelta | None = None
    attempts: int = 0  # 0: until the start-to-close/schedule-to-close budget runs out
    schedule_to_close: timedelta | None = timedelta(minutes=30)


QUICK = StepOptions()
LONG_WAIT = StepOptions(start_to_close=timedelta(hours=1), heartbeat=timedelta(seconds=10),
                        schedule_to_close=timedelta(hours=2))
NOTIFY = StepOptions(start_to_close=timedelta(seconds=30), attempts=5,
                     schedule_to_close=timedelta(minutes=5))

RETRY = dict(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
             maximum_interval=timedelta(seconds=30))
NON_RETRYABLE = ["InvalidInput", "NotFound", "BuildFailed", "RolloutFailed", "Conflict",
                 "Unauthorized"]


class StepFailed(Exception):
    def __init__(self, step: str, cause: str, error_type: str = "") -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause
        self.error_type = error_type


def describe_cause(error: BaseException) -> tuple[str, str]:
    """The innermost message and type of an activity/child failure."""
    while isinstance(error, (ActivityError, ChildWorkflowError)) and error.cause is not None:
        error = error.cause
    kind = getattr(error, "type", "") or type(error).__name__
    return str(error.message if hasattr(error, "message") else error), kind or ""


class Saga:
    """Undo steps registered before their step runs; compensated in reverse order."""

    def __init__(self) -> None:
        self._undos: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def add(self, description: str, undo: Callable[[], Awaitable[Any]]) -> None:
        self._undos.append((description, undo))

    def discard(self, description: str) -> None:
        self._undos = [(d, u) for d, u in self._undos if d != description]

    @property
    def pending(self) -> list[str]:
        return [d for d, _ in self._undos]

    async def compensate(self) -> tuple[list[str], list[str]]:
        undone, failed = [], []
        while self._undos:
            description, undo = self._undos.pop()
            try:
                # Shielded: a second cancellation must not interrupt an undo half-way.
                await asyncio.shield(asyncio.ensure_future(undo()))
                undone.append(description)
            except Exception as e:  # noqa: BLE001 - report and keep undoing the rest
                failed.append(f"{description} ({describe_cause(e)[0]})")
        return undone, failed


class KeplerWorkflow:
    """Base class: subclasses call `self.begin(...)` first thing in `run`."""

    def __init__(self) -> None:
        self.state: OperationStatus | None = None
        self.saga = Saga()
        self._decision: tuple[str, ApprovalDecision] | None = None
        self._coalesce = False
        self._pending_attributes: dict[str, SearchAttributeUpdate] = {}

    # --- status and search attributes -------------------------------------------------------

    def begin(self, operation: Operation, service: str, env: str, requested_by: str,
              version: str = "") -> None:
        self.state = OperationStatus(operation=operation, service=service, env=env,
                                     requested_by=requested_by, version=version)
        updates = [
            sa.SERVICE.value_set(service), sa.ENV.value_set(env),
            sa.OPERATION.value_set(operation.value), sa.REQUESTED_BY.value_set(requested_by),
            sa.STAGE.value_set("starting"), sa.OUTCOME.value_set("running"),
            *([sa.VERSION.value_set(version)] if version else []),
        ]
        self._coalesce = workflow.patched(COALESCED_SEARCH_ATTRIBUTES)
        self._upsert(updates)  # coalesced: only what the starter did not set already

    @workflow.query
    def status(self) -> OperationStatus:
        assert self.state is not None
        return self.state

    def set_stage(self, stage: str, defer: bool = False) -> None:
        """The stage in `status` at once; in the search attributes at once too, unless
        `defer` (a step of milliseconds): then with the next write (see _upsert)."""
        assert self.state is not None
        if self.state.stage != stage or (self._coalesce and not defer):
            # (a deferred step may have set the same name: the write is still owed)
            self.state.stage = stage
            self._upsert([sa.STAGE.value_set(stage)], defer)

    def set_outcome(self, outcome: Outcome) -> None:
        """An outcome while still running (e.g. "soaking"): written with the next stage."""
        assert self.state is not None
        self.state.outcome = outcome
        self._upsert([sa.OUTCOME.value_set(outcome)], defer=True)

    def set_version(self, version: str) -> None:
        assert self.state is not None
        self.state.version = version
        self._upsert([sa.VERSION.value_set(version)], defer=True)

    def _upsert(self, updates: list[SearchAttributeUpdate], defer: bool = False) -> None:
        """Each upsert is a history event and a visibility write on the server (~2 ms of
        server CPU; at 200 concurrent releases, ten a release made them 45 % slower:
        bench/RESULTS.md). So quick steps only queue their stage, and it is written
        with the next stage that waits (build, approval, rollout, bake, canary step,
        compensation) or with the outcome; `status` is always current."""
        if not self._coalesce:
            workflow.upsert_search_attributes(updates)
            return
        for update in updates:
            self._pending_attributes[update.key.name] = update
        if not defer:
            current = workflow.info().typed_search_attributes
            changed = [u for u in self._pending_attributes.values()
                       if current.get(u.key) != u.value]  # e.g. a stage left and come back to
            self._pending_attributes.clear()
            if changed:
                workflow.upsert_search_attributes(changed)

    def finish(self, outcome: Outcome, error: str = "") -> None:
        assert self.state is not None
        self.state.outcome = outcome
        self.state.error = error
        self.state.stage = "done"
        self._upsert([sa.OUTCOME.value_set(outcome), sa.STAGE.value_set("done")])
        self._approval_metric(False)
        metrics.operation_finished(self._operation_name(), self.state.service, self.state.env, outcome)

    def _operation_name(self) -> str:
        operation = self.state.operation if self.state else ""
        return str(getattr(operation, "value", operation))

    def _approval_metric(self, pending: bool) -> None:
        """The `kepler_approvals_pending` gauge: 1 from the gate's start until decided."""
        if pending or getattr(self, "_approval_gauge", False):
            self._approval_gauge = pending
            metrics.approval_pending(self._operation_name(), self.state.service, self.state.env,
                                     pending)

    # --- steps ------------------------------------------------------------------------------

    async def step(self, name: str, activity: Callable[..., Any], arg: Any,
                   options: StepOptions = QUICK, result_type: type | None = None) -> Any:
        assert self.state is not None
        record = StepRecord(name=name, started_at=workflow.now())
        self.state.steps.append(record)
        self.set_stage(name, defer=options.heartbeat is None)  # heartbeats: a long wait
        try:
            result = await workflow.execute_activity_method(
                activity, args=[] if arg is None else [arg], summary=name,
                start_to_close_timeout=options.start_to_close,
                schedule_to_close_timeout=options.schedule_to_close,
                heartbeat_timeout=options.heartbeat,
                retry_policy=RetryPolicy(maximum_attempts=options.attempts,
                                         non_retryable_error_types=NON_RETRYABLE, **RETRY),
                **({"result_type": result_type} if result_type else {}),
            )
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):  # the workflow itself is being cancelled
                record.outcome, record.detail, record.finished_at = "failed", "cancelled", workflow.now()
                raise asyncio.CancelledError() from e
            cause, kind = describe_cause(e)
            record.outcome, record.detail, record.finished_at = "failed", cause, workflow.now()
            raise StepFailed(name, cause, kind) from e
        record.outcome, record.finished_at = "done", workflow.now()
        return result

    def skip(self, name: str, detail: str) -> None:
        assert self.state is not None
        now = workflow.now()
        self.state.steps.append(StepRecord(name=name, started_at=now, finished_at=now,
                                           outcome="skipped", detail=detail))

    async def notify(self, event: str, text: str) -> None:
        """Best effort: a notification failure is recorded, never fails the operation."""
        assert self.state is not None
        note = Notification(event=event, service=self.state.service, env=self.state.env, text=text,
                            link=workflow.info().workflow_id)
        try:
            await workflow.execute_activity_method(
                NotifyActivities.notify, note, summary=f"notify {event}",
                start_to_close_timeout=NOTIFY.start_to_close,
                schedule_to_close_timeout=NOTIFY.schedule_to_close,
                retry_policy=RetryPolicy(maximum_attempts=NOTIFY.attempts, **RETRY))
        except ActivityError as e:
            self.state.notes.append(f"notification {event!r} not delivered: {describe_cause(e)[0]}")

    async def compensate(self) -> list[str]:
        assert self.state is not None
        if not self.saga.pending:
            return []
        self.set_stage("compensating")
        undone, failed = await self.saga.compensate()
        self.state.undone = undone
        if failed:
            self.state.notes.append("undo failed: " + "; ".join(failed))
        return undone

    # --- approval gate ----------------------------------------------------------------------

    async def approval_gate(self, policy: ApprovalPolicy, what: str) -> None:
        """Wait for `policy.min_approvals` approvals (or one rejection), with reminders.
        Raises ApplicationError on rejection or expiry, after setting the outcome."""
        assert self.state is not None
        deadline = workflow.now() + policy.timeout
        self.state.pending_approval = PendingApproval(
            env=self.state.env, approvers=list(policy.approvers),
            requested_by=self.state.requested_by, min_approvals=policy.min_approvals,
            deadline=deadline)
        self.set_stage("awaiting approval")
        self._approval_metric(True)
        await self.notify("awaiting_approval", f"{what} needs approval by one of "
                          f"{', '.join(policy.approvers)} before {deadline.isoformat()}")
        while self._decision is None:
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                break
            try:
                await workflow.wait_condition(lambda: self._decision is not None,
                                              timeout=min(policy.remind_every, remaining))
            except asyncio.TimeoutError:
                if workflow.now() < deadline:
                    await self.notify("approval_reminder", f"{what} is still waiting for approval")
        pending = self.state.pending_approval
        self.state.pending_approval = None
        self._approval_metric(False)
        if self._decision is None:
            raise ApprovalEnded("expired", f"approval expired after {policy.timeout}")
        verdict, decision = self._decision
        if verdict == "reject":
            raise ApprovalEnded("rejected", f"rejected by {decision.approver}"
                                + (f": {decision.comment}" if decision.comment else ""))
        self.state.notes.append("approved by " + ", ".join(a.approver for a in pending.approvals))

    def _check_decision(self, decision: ApprovalDecision) -> PendingApproval:
        pending = self.state.pending_approval if self.state else None
        if pending is None or self._decision is not None:
            raise ValueError("nothing is pending approval")
        if decision.approver == pending.requested_by:
            raise ValueError(f"{decision.approver} requested this operation and may not approve "
                             "it (four eyes)")
        if decision.approver not in pending.approvers:
            raise ValueError(f"{decision.approver} is not an approver for {pending.env} "
                             f"(approvers: {', '.join(pending.approvers)})")
        if any(a.approver == decision.approver for a in pending.approvals):
            raise ValueError(f"{decision.approver} has already approved")
        return pending

    @workflow.update
    async def approve(self, decision: ApprovalDecision) -> str:
        pending = self._check_decision(decision)
        pending.approvals.append(decision)
        if len(pending.approvals) >= pending.min_approvals:
            self._decision = ("approve", decision)
            return "approved"
        return f"approval recorded ({len(pending.approvals)} of {pending.min_approvals})"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)

    @workflow.update
    async def reject(self, decision: ApprovalDecision) -> str:
        self._check_decision(decision)
        self._decision = ("reject", decision)
        return "rejected"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)


class ApprovalEnded(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def failure(message: str, outcome: str) -> ApplicationError:
    """The final error of a workflow: non-retryable, typed by outcome."""
    return ApplicationError(message, type=f"Kepler{outcome.title().replace('_', '')}",
                            non_retryable=True)
