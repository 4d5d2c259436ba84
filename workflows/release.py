"""ReleaseVersion: put one git ref of a service into one environment, safely.

The runbook: resolve the ref; reuse or build the image; pin it by digest; get
approval when policy asks; remember what runs now; apply image + config; wait
for the rollout; verify; notify. Anything failing after the apply puts the
previous image *and* config back.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.gitlab import GitLabActivities
    from activities.platform import PlatformActivities
    from activities.prometheus import PrometheusActivities
    from kepler import naming
    from kepler.models import Operation, ReleaseReport, ReleaseRequest
    from kepler.scale import Overrides
    from kepler.train import TRAIN_PREFIX
    from kepler.steps import (
        ApplyRelease, EnvironmentPolicy, PolicyQuery, ReadSpec, ReleaseTarget, ResolveRef,
        VerifyRelease, WaitRollout,
    )
    from workflows.base import (
        QUICK, ApprovalEnded, KeplerWorkflow, StepFailed, StepOptions, failure,
    )
    from workflows.image import ensure_image
    import workflows.cronjob as cronjob
    import workflows.kube as kube


@workflow.defn(name="ReleaseVersion")
class ReleaseVersion(KeplerWorkflow):
    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseReport:
        self.begin(Operation.RELEASE, req.service, req.env, req.requested_by, req.ref)
        report = ReleaseReport(service=req.service, env=req.env, outcome="running")
        applied = False
        try:
            policy: EnvironmentPolicy = await self.step(
                "read policy", PlatformActivities.environment_policy,
                PolicyQuery(service=req.service, env=req.env))
            commit = await self.step("resolve ref", GitLabActivities.resolve_ref,
                                     ResolveRef(service=req.service, ref=req.ref))
            report.commit = commit.sha
            self.set_version(f"{req.ref}@{commit.short_id}")
            spec = await self.step("read service spec", GitLabActivities.read_spec,
                                   ReadSpec(service=req.service, sha=commit.sha))
            image = await ensure_image(self, policy, req.service, commit.sha)
            report.image = image

            if policy.approval.required and self.approved_by_train(req):
                self.skip("approval", f"approved with {workflow.info().parent.workflow_id}")
            elif policy.approval.required:
                await self.approval_gate(policy.approval,
                                         f"release of {req.service} {req.ref} to {req.env}")
                report.approved_by = [a for a in self.state.notes if a.startswith("approved by")]

            target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
            if spec.type == "cronjob":  # a CronJob's pod template; one run is the check
                previous = await cronjob.snapshot(self, target)
                report.previous_image = previous.image
                applied = True
                await cronjob.release(self, req, previous, spec, image, commit.sha)
                return await self._released(report, req)
            snapshot = await kube.snapshot(self, target)
            report.previous_image = snapshot.image
            self.saga.add(f"restore {snapshot.image or 'the empty deployment'} and its config",
                          lambda: kube.restore_and_wait(self, snapshot, policy.rollout_timeout))
            applied = True
            override = Overrides.from_annotations(snapshot.annotations)  # kepler scale|resources
            result = await kube.apply(self, ApplyRelease(
                target=target, image=image,
                replicas=spec.replicas_in(req.env) if override.replicas is None else override.replicas,
                config=spec.config_files, env=spec.env_in(req.env),
                resources=override.resources or spec.resources_in(req.env), port=spec.port,
                health_path=spec.health_path,
                annotations={
                    naming.RELEASE_ID: workflow.info().workflow_id + "/" + workflow.info().run_id,
                    naming.COMMIT: commit.sha, naming.REQUESTED_BY: req.requested_by,
                    naming.VERSION: req.ref,
                }))
            await kube.wait_rollout(self, WaitRollout(target=target, generation=result.generation,
                                                      timeout=policy.rollout_timeout))
            await self.verify(policy, req)
        except (StepFailed, ApprovalEnded) as e:
            return await self._fail(e, report, applied)
        except asyncio.CancelledError:
            report.undone = await self.compensate()
            self.finish("cancelled", "cancelled by request")
            await self.notify("cancelled", f"release of {req.ref} cancelled; undone: "
                              f"{', '.join(report.undone) or 'nothing'}")
            raise
        return await self._released(report, req)

    @staticmethod
    def approved_by_train(req: ReleaseRequest) -> bool:
        """The train's one gate stands for its members' gates: honoured only when this
        release is the child of a ReleaseTrain (a client cannot start a child, so setting
        the flag on a release of one's own changes nothing)."""
        parent = workflow.info().parent
        return req.train_approved and parent is not None and parent.workflow_id.startswith(
            TRAIN_PREFIX) and parent.workflow_id.endswith("@" + req.env)

    async def _released(self, report: ReleaseReport, req: ReleaseRequest) -> ReleaseReport:
        self.finish("succeeded")
        report.outcome = "succeeded"
        await self.notify("succeeded", f"{req.ref} ({report.commit[:12]}) is live in {req.env}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    async def verify(self, policy: EnvironmentPolicy, req: ReleaseRequest) -> None:
        if policy.bake_time > timedelta(0):
            self.set_stage("baking")
            await workflow.sleep(policy.bake_time)
        if not policy.verify_with_prometheus:
            self.skip("verify", "no Prometheus check configured for this environment")
            return
        verdict = await self.step("verify", PrometheusActivities.verify, VerifyRelease(
            env=req.env, namespace=policy.namespace, service=req.service, workload=req.service))
        if verdict.verdict == "failed":
            raise StepFailed("verify", verdict.detail, "VerificationFailed")

    async def _fail(self, error: Exception, report: ReleaseReport, applied: bool) -> ReleaseReport:
        outcome = error.outcome if isinstance(error, ApprovalEnded) else (
            "rolled_back" if applied else "failed")
        report.undone = await self.compensate()
        message = (f"step '{error.step}' failed: {error.cause}" if isinstance(error, StepFailed)
                   else str(error))
        message += f"; undone: {', '.join(report.undone) or 'nothing'}"
        self.finish(outcome, message)
        report.outcome, report.error = outcome, message
        await self.notify(outcome, message)
        await workflow.wait_condition(workflow.all_handlers_finished)
        raise failure(message, outcome)
