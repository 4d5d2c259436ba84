"""ScheduledRelease: what a release schedule starts at each fire (kepler/schedules.py).

It starts ReleaseVersion as a child under `<service>@<env>` and waits for it. Whenever a
manual release would be refused (another operation holds `<service>@<env>`, or a create
or decommission holds `<service>@all`, or the environment is frozen), the fire is skipped
and says why."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.operations import OperationsActivities
    from activities.platform import PlatformActivities
    from kepler.freeze import in_force
    from kepler.steps import EnvironmentPolicy, PolicyQuery
    from kepler import naming
    from kepler.decommission import RunningQuery
    from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
    from workflows.base import ONE_LIFECYCLE
    from workflows.common.options import QUICK, RETRY
    from workflows.common.children import child_operation
    from workflows.steps.freeze import FREEZE_WINDOWS


@workflow.defn(name="ScheduledRelease")
class ScheduledRelease:
    def __init__(self) -> None:
        self.result = ScheduledReleaseReport(outcome="running")

    @workflow.query
    def status(self) -> ScheduledReleaseReport:
        return self.result

    @workflow.run
    async def run(self, req: ScheduledReleaseRequest) -> ScheduledReleaseReport:
        rel = req.release
        child_id = naming.workflow_id(rel.service, rel.env)
        self.result.release_id = child_id
        if workflow.patched(ONE_LIFECYCLE):  # runs from before did not look
            busy = await workflow.execute_activity_method(
                OperationsActivities.running_operations, RunningQuery(service=rel.service, envs=[]),
                summary="check nothing runs on the whole service",
                start_to_close_timeout=QUICK.start_to_close,
                schedule_to_close_timeout=QUICK.schedule_to_close,
                retry_policy=RetryPolicy(**RETRY))
            if busy:  # a create or decommission holds <service>@all: a manual release waits too
                self.result.outcome = "skipped"
                self.result.detail = "; ".join(busy)
                return self.result
        if await self._frozen(req):
            return self.result
        ending = await child_operation(
            rel, child_id, f"scheduled release {rel.service} "
            f"{rel.ref or 'from ' + str(rel.from_env)} to {rel.env} ({req.cron})")
        if ending.outcome == "busy":
            self.result.outcome = "skipped"
            self.result.detail = f"{child_id} was busy with another operation at fire time"
        else:
            self.result.outcome, self.result.report = ending.outcome, ending.report
            self.result.detail = ending.message
        return self.result

    async def _frozen(self, req: ScheduledReleaseRequest) -> bool:
        """Skip a fire during a freeze (runs from before did not look); a release that says
        to wait for the end (after_freeze) is started and waits itself."""
        rel = req.release
        if rel.after_freeze or not workflow.patched(FREEZE_WINDOWS):
            return False
        options = dict(start_to_close_timeout=QUICK.start_to_close,
                       schedule_to_close_timeout=QUICK.schedule_to_close,
                       retry_policy=RetryPolicy(**RETRY))
        policy: EnvironmentPolicy = await workflow.execute_activity_method(
            PlatformActivities.environment_policy, PolicyQuery(service=rel.service, env=rel.env),
            summary="read the freeze windows", **options)  # type: ignore[arg-type]
        adhoc = await workflow.execute_activity_method(
            OperationsActivities.active_freeze, rel.env, summary="check freeze",
            **options)  # type: ignore[arg-type]
        frozen = in_force(policy.freeze, adhoc, rel.env, workflow.now())
        if frozen is None:
            return False
        self.result.outcome = "skipped"
        self.result.detail = f"not released: {frozen.describe()}"
        return True
