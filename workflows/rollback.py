"""Rollback: the emergency path back to a known-good version.

The runbook: find the target (the previous revision, a version, or a digest)
in the Deployment's revision history or the registry; approval only if the
environment's policy asks (by default none); apply its image and the config of
its commit; wait for the rollout; route 100 % to stable; run the pre_deploy undo of the
version rolled away from, if its release recorded one; notify.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import ROLLBACK
    from activities.gitlab import GitLabActivities
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.registry import RegistryActivities
    from kepler import manifests
    from kepler.models import Operation, ReleaseReport, RollbackRequest
    from kepler.payloads import (
        ApplyRelease, EnvironmentPolicy, ImageQuery, ReadSpec, ReleaseSnapshot,
        ReleaseTarget, ResolveRef, Revision, RouteWeights, WaitRollout,
    )
    import workflows.steps.cronjob as cronjob
    import workflows.steps.hooks as release_hooks
    import workflows.steps.kube as kube
    from workflows.steps.platform import check_bounds, read_policy
    from workflows.common.approval import SIGNED_APPROVALS
    from workflows.common.approval import ApprovalGate
    from workflows.base import Done, KeplerWorkflow, StepFailed


@workflow.defn(name=ROLLBACK.workflow)
class Rollback(ApprovalGate, KeplerWorkflow[ReleaseReport]):
    @workflow.run
    async def run(self, req: RollbackRequest) -> ReleaseReport:
        self.report = ReleaseReport(service=req.service, env=req.env, outcome="running")
        return await self.operate(Operation.ROLLBACK, req.service, req.env, req.requested_by,
                                  req.target, lambda: self.runbook(req), req)

    async def runbook(self, req: RollbackRequest) -> Done:
        report: ReleaseReport = self.report
        policy: EnvironmentPolicy = await read_policy(self, req.service, req.env)
        target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
        current = await kube.snapshot(self, target)
        is_cronjob = False
        if not current.exists:  # a cronjob service
            current = await cronjob.snapshot(self, target)
            is_cronjob = current.exists
        if not current.exists:
            raise StepFailed("find target", f"{req.service} has no Deployment or CronJob in "
                             f"{req.env}", "NotFound")
        report.previous_image = current.image
        image, commit = await self.find_target(req, policy, target, current, is_cronjob)
        report.image, report.commit = image, commit
        self.set_version(commit[:12] if commit else image.rsplit("@", 1)[-1][:19])
        # the emergency path (no approval unless rollback_approval says so) leads only back
        # to what was live here before; any other image is a release, and gated like one
        known = any(r.image == image for r in current.history)
        gate = policy.rollback_approval if policy.rollback_approval.required else None
        if gate is None and not known and policy.approval.required:
            patches.retired(SIGNED_APPROVALS)
            gate = policy.approval
        if gate is not None:
            approvals = await self.approval_gate(
                gate, f"rollback of {req.service} in {req.env} to {req.target}"
                + ("" if known else " (never live here: approved like a release)"),
                digests=[image], commits=[commit] if commit else [])
            report.approved_by = [a.approver for a in approvals]

        config, env, resources, replicas = current.config, current.env, current.resources, current.replicas
        pod = current.pod
        if commit:
            spec = await self.step("read service spec", GitLabActivities.read_spec,
                                   ReadSpec(service=req.service, sha=commit))
            config, env = spec.config_files, spec.env_in(req.env)
            # an override from `kepler resources` outlives releases and rollbacks
            resources = kube.overrides_of(current).resources or \
                spec.resources_in(req.env)
            replicas = current.replicas or spec.replicas_in(req.env)
            pod = manifests.pod_shape(spec, req.env, job=is_cronjob)
            check_bounds(self, policy, replicas, resources, f"the spec of {commit[:12]}")

        change = ApplyRelease(
            target=target, image=image, replicas=replicas, config=config or {}, env=env,
            resources=resources or manifests.Resources(), pod=pod, annotations=kube.release_annotations(
                req.requested_by, commit=commit, version=f"rollback to {req.target}"),
            authorization=self.authorization(
                "rollback_approval" if policy.rollback_approval.required else
                "history" if known else "approval"))
        if is_cronjob:  # the next scheduled run is the check, as for a cronjob release
            self.saga.add(f"restore {current.image} and its config",
                          lambda: cronjob.restore(self, current))
            await cronjob.apply(self, change)
        else:
            restore = self.saga.add(f"restore {current.image} and its config",
                                    lambda: kube.restore_and_wait(self, current, policy.rollout_timeout))
            result = await kube.apply(self, change)
            await kube.wait_rollout(self, WaitRollout(
                target=target, generation=result.generation, timeout=policy.rollout_timeout))
            await self.step("route 100% to stable", IstioActivities.set_routes, RouteWeights(
                env=req.env, namespace=policy.namespace, service=req.service))
        await kube.record_release(self, target, image, commit, f"rollback to {req.target}",
                                  req.requested_by, cronjob=is_cronjob)
        undo = None if is_cronjob else release_hooks.rolled_away_undo(current, image)
        if undo is not None:  # the version left behind declared a pre_deploy undo
            await release_hooks.undo_rolled_away(self, current, undo, restore)
        return Done("rolled_back", f"{req.service} in {req.env} rolled back to {report.image}"
                    + (f" ({req.reason})" if req.reason else ""))

    async def find_target(self, req: RollbackRequest, policy: EnvironmentPolicy,
                          target: ReleaseTarget, current: ReleaseSnapshot,
                          is_cronjob: bool = False) -> tuple[str, str]:
        """(image by digest, commit or '') of the rollback target. "previous" is the
        release that was live and healthy before the current one, from Kepler's own release
        history; the ReplicaSet history is the fallback (a restore makes a new revision, so
        it would name a crashed version)."""
        if req.target == "previous":
            for record in current.history:
                if record.image != current.image:
                    self.skip("read revision history", f"from Kepler's release history: "
                              f"{record.version or record.commit[:12]} of {record.at:%Y-%m-%d %H:%M} UTC")
                    return record.image, record.commit
        history: list[Revision] = [] if is_cronjob else await self.step(
            "read revision history", DeploymentActivities.revision_history, target)
        if req.target == "previous":
            for rev in history:
                if rev.image != current.image and rev.image != manifests.PLACEHOLDER_IMAGE:
                    return rev.image, rev.commit
            raise StepFailed("find target", f"{req.service} in {req.env} has no earlier release "
                             "to roll back to", "NotFound")
        if req.target.startswith("sha256:"):
            reference = req.target
            commit = next((r.commit for r in history if r.image.endswith("@" + req.target)), "")
        else:
            resolved = await self.step("resolve version", GitLabActivities.resolve_ref,
                                       ResolveRef(service=req.service, ref=req.target))
            reference = commit = resolved.sha
        image = await self.step("find image", RegistryActivities.find_image, ImageQuery(
            repository=policy.image_repository, reference=reference))
        if not image:
            raise StepFailed("find image", f"no image for {req.target} in the registry: "
                             "release it instead of rolling back", "NotFound")
        return image, commit
