"""RunJob: `kepler job run SERVICE --env ENV` runs a cronjob service once, now.

It holds the `<service>@<env>` lock like every mutating operation (a release and a
manual run never overlap), records who asked and why, creates a Job from the
CronJob's template, waits for its verdict and notifies. Cancelled, it stops the run.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from kepler import naming
    from kepler.jobs import JobReport, RunJobRequest
    from kepler.models import Operation
    from kepler.steps import EnvironmentPolicy, PolicyQuery, ReleaseTarget
    import workflows.cronjob as cronjob
    from workflows.base import KeplerWorkflow, StepFailed, failure


@workflow.defn(name="RunJob")
class RunJob(KeplerWorkflow):
    @workflow.run
    async def run(self, req: RunJobRequest) -> JobReport:
        self.begin(Operation.JOB, req.service, req.env, req.requested_by)
        report = JobReport(service=req.service, env=req.env, outcome="running")
        try:
            policy: EnvironmentPolicy = await self.step(
                "read policy", PlatformActivities.environment_policy,
                PolicyQuery(service=req.service, env=req.env))
            target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
            result = await cronjob.run_once(self, target, "run", {
                naming.RELEASE_ID: workflow.info().workflow_id + "/" + workflow.info().run_id,
                naming.REQUESTED_BY: req.requested_by}, step="start the run")
            report.job, report.log_tail = result.name, result.log_tail
        except StepFailed as e:
            undone = await self.compensate()
            message = f"step '{e.step}' failed: {e.cause}" + (
                f"; undone: {', '.join(undone)}" if undone else "")
            self.finish("failed", message)
            await self.notify("failed", message)
            raise failure(message, "failed")
        except asyncio.CancelledError:
            undone = await self.compensate()
            self.finish("cancelled", "cancelled; undone: " + (", ".join(undone) or "nothing"))
            raise
        self.finish("succeeded")
        report.outcome = "succeeded"
        await self.notify("succeeded", f"run {report.job} of {req.service} in {req.env} succeeded"
                          + (f" ({req.reason})" if req.reason else ""))
        return report
