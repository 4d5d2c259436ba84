"""RunJob: `kepler job run SERVICE --env ENV` runs a cronjob service once, now.

It holds the `<service>@<env>` lock like every mutating operation (a release and a
manual run never overlap), records who asked and why, creates a Job from the
CronJob's template, waits for its verdict and notifies. Cancelled, it stops the run.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import RUN_JOB
    from kepler.jobs import JobReport, RunJobRequest
    from kepler.models import Operation
    from kepler.payloads import EnvironmentPolicy, ReleaseTarget
    import workflows.steps.cronjob as cronjob
    import workflows.steps.kube as kube
    from workflows.steps.platform import read_policy
    from workflows.base import Done, KeplerWorkflow


@workflow.defn(name=RUN_JOB.workflow)
class RunJob(KeplerWorkflow[JobReport]):
    @workflow.run
    async def run(self, req: RunJobRequest) -> JobReport:
        self.report = JobReport(service=req.service, env=req.env, outcome="running")
        return await self.operate(Operation.JOB, req.service, req.env, req.requested_by, "",
                                  lambda: self.runbook(req), req)

    async def runbook(self, req: RunJobRequest) -> Done:
        policy: EnvironmentPolicy = await read_policy(self, req.service, req.env)
        target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
        result = await cronjob.run_once(self, target, "run", kube.release_annotations(
            req.requested_by), step="start the run")
        self.report.job, self.report.log_tail = result.name, result.log_tail
        return Done("succeeded", f"run {result.name} of {req.service} in {req.env} succeeded"
                    + (f" ({req.reason})" if req.reason else ""))
