"""ScheduledRelease: what a release schedule starts at each fire (kepler/schedules.py).

The runbook: whenever a manual release would be refused — a create or decommission
holds `<service>@all`, the environment is frozen, another operation holds
`<service>@<env>` — the fire is skipped, says why and notifies; otherwise it starts
ReleaseVersion as a child under `<service>@<env>` and ends as the release did (the
release notifies its own ending)."""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import SCHEDULED_RELEASE
    from activities.temporal import TemporalActivities
    from activities.platform import PlatformActivities
    from kepler import naming
    from kepler.decommission import RunningQuery
    from kepler.models import Operation
    from kepler.contracts import SCHEDULED_REPORT
    from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
    from kepler.payloads import EnvironmentPolicy, PolicyQuery
    from workflows.base import COORDINATORS, Done, KeplerWorkflow
    from workflows.common.children import child_operation
    import workflows.steps.freeze as freeze
    from workflows.legacy.coordinators import scheduled_release


@workflow.defn(name=SCHEDULED_RELEASE.workflow)
class ScheduledRelease(KeplerWorkflow[ScheduledReleaseReport]):
    def __init__(self) -> None:
        super().__init__()
        self.report = ScheduledReleaseReport(outcome="running")

    @workflow.query(name=SCHEDULED_REPORT.name)
    def fire(self) -> ScheduledReleaseReport:
        return self.report

    @workflow.run
    async def run(self, req: ScheduledReleaseRequest) -> ScheduledReleaseReport:
        if not patches.since(COORDINATORS):
            return await scheduled_release(self.report, req)
        rel = req.release
        return await self.operate(Operation.SCHEDULED_RELEASE, rel.service, rel.env,
                                  rel.requested_by, rel.ref or f"from {rel.from_env}",
                                  lambda: self.runbook(req), req)

    async def runbook(self, req: ScheduledReleaseRequest) -> Done:
        rel = req.release
        child_id = naming.workflow_id(rel.service, rel.env)
        self.report.release_id = child_id
        busy: list[str] = await self.step(
            "check nothing runs on the whole service", TemporalActivities.running_operations,
            RunningQuery(service=rel.service, envs=[]))
        if busy:  # a create or decommission holds <service>@all: a manual release waits too
            return self.skipped("; ".join(busy))
        if not rel.after_freeze:  # one that says to wait for the end is started and waits itself
            policy: EnvironmentPolicy = await self.step(
                "read the freeze windows", PlatformActivities.environment_policy,
                PolicyQuery(service=rel.service, env=rel.env))
            frozen = await freeze.in_force(self, policy)
            if frozen is not None:
                return self.skipped(f"not released: {frozen.describe()}")
        self.set_stage(f"releasing to {rel.env}")
        ending = await child_operation(
            rel, child_id, f"scheduled release {rel.service} "
            f"{rel.ref or 'from ' + str(rel.from_env)} to {rel.env} ({req.cron})")
        if ending.outcome == "busy":
            return self.skipped(f"{child_id} was busy with another operation at fire time")
        self.report.report, self.report.detail = ending.report, ending.message
        return Done(ending.outcome, f"{child_id}: {ending.outcome}", ending.outcome,  # type: ignore[arg-type]
                    notify=False)  # the release told its own ending

    def skipped(self, why: str) -> Done:
        self.report.detail = why
        return Done("skipped", f"scheduled release skipped: {why}", "skipped")
