"""The one operation lifecycle every Kepler workflow runs in (docs/architecture.md).

`operate` begins the operation (status, search attributes), runs the workflow's runbook
and owns every way it can end: succeeded (or the runbook's own success, e.g.
restored), failed, rolled_back, cancelled, rejected, expired, aborted. On any end but
success it compensates the saga (each undo shielded), tells the truth about the outcome
(`rolled_back` only when every undo succeeded; otherwise `failed`, naming what could not
be put back), notifies, waits for running handlers and raises the final error. A
workflow writes its runbook and, where it needs them, the hooks `before_undo`,
`end_message` and `on_end`.

Deterministic only: no I/O, no wall clock (workflow.now()), no randomness.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Awaitable, Callable, Generic, NamedTuple, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, CancelledError, FailureError

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import STATUS
    from kepler import search_attributes as sa
    from kepler.models import Operation, OperationStatus, Outcome, StepRecord
    from activities.notify import NotifyActivities
    from kepler.notifications import Notification
    import workflows.common.metrics as metrics
    from workflows.common.approval import ApprovalEnded
    from workflows.common.requester import RequestAuthority
    from workflows.common.errors import OperationEnded, StepFailed, failure, not_put_back_of
    from workflows.common.options import LOCAL_READS, LOCAL_RETRY_THRESHOLD, LONG_WAIT, NOTIFY, QUICK, RETRY, UNDO, StepOptions
    from workflows.common.saga import Compensation, NotPutBack, Saga, Undo, describe_cause

__all__ = ["KeplerWorkflow", "Done", "EVERY_PROMISE", "SEALED_AUTHORITY", "StepFailed", "OperationEnded", "ApprovalEnded", "NotPutBack",
           "Undo", "StepOptions", "QUICK", "LONG_WAIT", "UNDO", "describe_cause", "failure",
           "not_put_back_of"]

# Patch ids (docs/architecture.md, "Patches"). Retired in 0.2.0 (`workflow.deprecate_patch`:
# the old branches are gone, runs begun before them no longer replay): search attributes
# written coalesced; the one lifecycle; every promise kept; authority derived, never carried.
COALESCED_SEARCH_ATTRIBUTES = "kepler-coalesced-search-attributes"
ONE_LIFECYCLE = "kepler-one-lifecycle"
EVERY_PROMISE = "kepler-every-promise"
SEALED_AUTHORITY = "kepler-sealed-authority"
# Patched (new in 0.2.0, retires in 0.3.0): ScheduledRelease and AutoPromotion run in the
# lifecycle (runs from before: workflows/legacy/).
COORDINATORS = "kepler-coordinators-in-the-lifecycle"
# Patched (new in 0.2.1, retires in 0.3.0): the reads of options.LOCAL_READS run as local
# activities (runs from before schedule them on the task queue, as they were recorded).
LOCAL_READS_PATCH = "kepler-local-reads"


class Done(NamedTuple):
    """How a runbook that went through ends: the notification, and the outcome."""
    event: str
    text: str
    outcome: Outcome = "succeeded"
    notify: bool = True  # False: a child operation already told this ending


Report = TypeVar("Report")


def _read_key(activity: Callable[..., Any], arg: Any) -> tuple[str, str]:
    defn = getattr(activity, "__temporal_activity_definition", None)
    text = arg.model_dump_json() if hasattr(arg, "model_dump_json") else repr(arg)
    return (defn.name if defn else repr(activity), text)


class KeplerWorkflow(RequestAuthority, Generic[Report]):
    """The lifecycle, composed: who asked (RequestAuthority), the saga, the compensation
    record, status and search attributes; a gated operation adds ApprovalGate, a canary
    its controls. `Report` is the workflow's result type (kepler/contracts.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: OperationStatus | None = None
        self.saga = Saga()
        self.report: Report = None  # type: ignore[assignment]  # set by run; outcome, error, undone filled here
        # everything compensated so far in this run (a decommission's restore, then the end),
        # and what children reported they could not put back (a train's members)
        self.compensation = Compensation()
        self._pending_attributes: dict[str, SearchAttributeUpdate] = {}
        self._change: list[SearchAttributeUpdate] = []  # record_change: written by finish()
        self._prefetched: dict[tuple[str, str], asyncio.Task[Any]] = {}  # see prefetch

    # --- the lifecycle ------------------------------------------------------------------------

    async def operate(self, operation: Operation, service: str, env: str, requested_by: str,
                      version: str, runbook: Callable[[], Awaitable[Done]],
                      request: Any = None) -> Report:
        self.request = request  # its signature is verified with the first policy read
        self.begin(operation, service, env, requested_by, version)
        try:
            done = await runbook()
        except (StepFailed, OperationEnded) as e:
            await self._end(e)
            raise AssertionError("unreachable")  # _end raises the final error
        except asyncio.CancelledError:
            await self._end(None)
            raise
        self.finish(done.outcome)
        self._fill_report(done.outcome, "", [])
        self.on_end(done.outcome)
        if done.notify:
            await self.notify(done.event, done.text)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.report

    async def _end(self, error: StepFailed | OperationEnded | None) -> None:
        """Undo, tell the truth, notify, wait for handlers; raise the final error
        (cancellation: return, the caller re-raises it)."""
        assert self.state is not None
        outcome: Outcome = "cancelled" if error is None else "failed"
        self.before_undo(outcome if error is None else getattr(error, "outcome", "failed"))
        await self.compensate()
        compensation = self.compensation
        if error is not None:
            outcome = self.truthful_outcome(error, compensation)
        message = ("cancelled by request" if error is None else error.describe())
        message += f"; undone: {', '.join(compensation.undone) or 'nothing'}"
        if compensation.not_put_back:
            message += f"; NOT put back: {'; '.join(compensation.not_put_back)}"
        if compensation.cleaned_up:
            message += f"; cleaned up: {', '.join(compensation.cleaned_up)}"
        message = self.end_message(outcome, message)
        untouched = not compensation.undone and compensation.complete
        self.state.bad_input = isinstance(error, StepFailed) and error.bad_input and untouched
        self.state.refused = isinstance(error, StepFailed) and error.refused and untouched
        self.finish(outcome, message)
        self._fill_report(outcome, message, compensation.undone)
        self.on_end(outcome)
        await self.notify(outcome, message)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if error is not None:
            raise failure(message, outcome, compensation.not_put_back)

    @staticmethod
    def truthful_outcome(error: StepFailed | OperationEnded, compensation: Compensation) -> Outcome:
        """`rolled_back` only when something was undone and every undo succeeded."""
        if not compensation.complete:
            return "failed"
        if isinstance(error, OperationEnded) and (error.outcome != "rolled_back" or compensation.undone):
            return error.outcome
        return "rolled_back" if compensation.undone else "failed"

    def _fill_report(self, outcome: Outcome, error: str, undone: list[str]) -> None:
        fields = getattr(type(self.report), "model_fields", {})
        for name, value in (("outcome", outcome), ("error", error), ("undone", undone)):
            if name in fields and (value or name == "outcome"):
                setattr(self.report, name, value)

    # --- hooks a workflow may override ----------------------------------------------------

    def needs_approval(self, policy: Any) -> bool:
        """Whether this operation will wait at a gate under the environment's `policy`
        (then its request must be signed); only gated operations (ApprovalGate) do."""
        return False

    def before_undo(self, outcome: str) -> None:
        """Called once when the operation ends other than successfully, before the saga."""

    def end_message(self, outcome: Outcome, message: str) -> str:
        """The final message (status error, notification, failure) of an unsuccessful end."""
        return message

    def on_end(self, outcome: Outcome) -> None:
        """Called once with the final outcome, before the last notification."""

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
        patches.retired(COALESCED_SEARCH_ATTRIBUTES)
        patches.retired(ONE_LIFECYCLE)
        self._upsert(updates)  # coalesced: only what the starter did not set already

    @workflow.query(name=STATUS.name)
    def status(self) -> OperationStatus:
        assert self.state is not None
        return self.state

    def set_stage(self, stage: str, defer: bool = False) -> None:
        """The stage in `status` at once; in the search attributes at once too, unless
        `defer` (a step of milliseconds): then with the next write (see _upsert)."""
        assert self.state is not None
        if self.state.stage != stage or not defer:
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

    def record_change(self, commit: str, committed_at: datetime | None, team: str) -> None:
        """What this release or canary changes, for `kepler metrics` (lead time, --team).
        Written with the outcome, in the write finish() makes anyway: no extra command."""
        self._change = [sa.COMMIT.value_set(commit), sa.TEAM.value_set(team),
                        *([sa.COMMIT_TIME.value_set(committed_at)] if committed_at else [])]

    def _upsert(self, updates: list[SearchAttributeUpdate], defer: bool = False) -> None:
        """Each upsert is a history event and a visibility write on the server (~2 ms of
        server CPU; at 200 concurrent releases, ten a release made them 45 % slower:
        bench/RESULTS.md). So quick steps only queue their stage, and it is written
        with the next stage that waits (build, approval, rollout, bake, canary step,
        compensation) or with the outcome; `status` is always current."""
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
        self._upsert([sa.OUTCOME.value_set(outcome), sa.STAGE.value_set("done"),
                      *self._change])
        metrics.operation_finished(self.state.operation.value, self.state.service,
                                   self.state.env, outcome)

    # --- steps ------------------------------------------------------------------------------

    async def step(self, name: str, activity: Callable[..., Any], arg: Any,
                   options: StepOptions = QUICK, result_type: type | None = None) -> Any:
        """Run one activity as a named step of `status`; raises StepFailed."""
        assert self.state is not None
        record = StepRecord(name=name, started_at=workflow.now())
        self.state.steps.append(record)
        self.set_stage(name, defer=options.heartbeat is None)  # heartbeats: a long wait
        try:
            result = await self.attempt(name, activity, arg, options, result_type)
        except (StepFailed, asyncio.CancelledError) as e:
            record.outcome, record.finished_at = "failed", workflow.now()
            record.detail = e.cause if isinstance(e, StepFailed) else "cancelled"
            raise
        record.outcome, record.finished_at = "done", workflow.now()
        return result

    async def attempt(self, name: str, activity: Callable[..., Any], arg: Any,
                      options: StepOptions = QUICK, result_type: type | None = None) -> Any:
        """One activity with `options`, not recorded as a step: its failure raises
        StepFailed, the workflow's own cancellation asyncio.CancelledError."""
        args = [] if arg is None else [arg]
        retry = RetryPolicy(maximum_attempts=options.attempts,
                            non_retryable_error_types=list(options.non_retryable), **RETRY)
        typed = {"result_type": result_type} if result_type else {}
        try:
            if self._runs_locally(activity, options):
                prefetched = self._prefetched.pop(_read_key(activity, arg), None)
                if prefetched is not None and options == QUICK and result_type is None:
                    return await prefetched
                return await workflow.execute_local_activity(
                    activity, args=args, summary=name, retry_policy=retry,
                    local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                    start_to_close_timeout=options.start_to_close,
                    schedule_to_close_timeout=options.schedule_to_close, **typed)
            return await workflow.execute_activity_method(
                activity, args=args, summary=name, retry_policy=retry,
                start_to_close_timeout=options.start_to_close,
                schedule_to_close_timeout=options.schedule_to_close,
                heartbeat_timeout=options.heartbeat, **typed)
        except FailureError as e:  # an ActivityError; a local activity's failure comes unwrapped
            if isinstance(e, CancelledError) or isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError() from e  # the workflow itself is being cancelled
            cause, kind = describe_cause(e)
            raise StepFailed(name, cause, kind) from e

    def prefetch(self, name: str, activity: Callable[..., Any], arg: Any) -> None:
        """Start now the read (of LOCAL_READS, QUICK) a step `name` of the runbook makes a
        little later with exactly `arg`, beside the reads before it: reads that end together
        come back in one workflow activation, and the worker's event loop, the bottleneck
        of many releases at once, handles each activation (bench/RESULTS.md, issue 31). The
        step awaits it instead of reading again; a read never awaited is a read wasted, and
        nothing else. Only for a read the runbook awaits (or `settle_reads`) before it waits on
        anything (a timer, a gate, a child): a ref resolved before a freeze is waited out
        would be hours old. Runs begun before patches.BASELINE read one after the other."""
        key = _read_key(activity, arg)
        if key in self._prefetched or not (self._runs_locally(activity, QUICK)
                                           and patches.begun_on_baseline()):
            return
        task = asyncio.create_task(workflow.execute_local_activity(
            activity, args=[arg], summary=name, local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            retry_policy=RetryPolicy(maximum_attempts=QUICK.attempts,
                                     non_retryable_error_types=list(QUICK.non_retryable), **RETRY),
            start_to_close_timeout=QUICK.start_to_close,
            schedule_to_close_timeout=QUICK.schedule_to_close))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen, if unused
        self._prefetched[key] = task

    async def settle_reads(self) -> None:
        """Let the prefetched reads still out end, unused (before a continue-as-new)."""
        pending = list(self._prefetched.values())
        self._prefetched.clear()
        if pending:
            await asyncio.wait(pending)

    @staticmethod
    def _runs_locally(activity: Callable[..., Any], options: StepOptions) -> bool:
        """A read of LOCAL_READS without a heartbeat, in a run begun with the patch."""
        defn = getattr(activity, "__temporal_activity_definition", None)
        return (options.heartbeat is None and defn is not None and defn.name in LOCAL_READS
                and patches.since(LOCAL_READS_PATCH))

    def skip(self, name: str, detail: str) -> None:
        assert self.state is not None
        now = workflow.now()
        self.state.steps.append(StepRecord(name=name, started_at=now, finished_at=now,
                                           outcome="skipped", detail=detail))

    async def notify(self, event: str, text: str) -> None:
        """Best effort: a notification failure is recorded, never fails the operation."""
        assert self.state is not None
        info = workflow.info()
        note = Notification(event=event, service=self.state.service, env=self.state.env, text=text,
                            link=info.workflow_id, run_id=info.run_id)
        try:
            await workflow.execute_activity_method(
                NotifyActivities.notify, note, summary=f"notify {event}",
                start_to_close_timeout=NOTIFY.start_to_close,
                schedule_to_close_timeout=NOTIFY.schedule_to_close,
                retry_policy=RetryPolicy(maximum_attempts=NOTIFY.attempts, **RETRY))
        except ActivityError as e:
            self.state.notes.append(f"notification {event!r} not delivered: {describe_cause(e)[0]}")

    async def compensate(self) -> Compensation:
        """Run the saga now (the lifecycle does on every unsuccessful end; a decommission's
        restore does on request)."""
        assert self.state is not None
        if not self.saga.pending:
            return Compensation()
        self.set_stage("compensating")
        compensation = await self.saga.compensate()
        self.compensation.add(compensation)
        self.state.undone = list(self.compensation.undone)
        if compensation.not_put_back:
            self.state.notes.append("not put back: " + "; ".join(compensation.not_put_back))
        return compensation
