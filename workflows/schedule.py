"""ScheduledRelease: what a release schedule starts at each fire (kepler/schedules.py).

It starts ReleaseVersion as a child under `<service>@<env>` and waits for it; when
another operation holds that lock, the fire is skipped and says so."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from kepler import naming
    from kepler.models import ReleaseReport
    from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
    from kepler.operations import outcome_of_error
    from workflows.common.saga import describe_cause


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
        try:
            handle = await workflow.start_child_workflow(
                "ReleaseVersion", rel, id=child_id, result_type=ReleaseReport,
                static_summary=f"scheduled release {rel.service} {rel.ref} to {rel.env} "
                               f"({req.cron})")
            self.result.report = await handle
            self.result.outcome = self.result.report.outcome
        except WorkflowAlreadyStartedError:
            self.result.outcome = "skipped"
            self.result.detail = f"{child_id} was busy with another operation at fire time"
        except ChildWorkflowError as e:
            message, kind = describe_cause(e)
            self.result.outcome = outcome_of_error(kind)
            self.result.detail = message
        return self.result
