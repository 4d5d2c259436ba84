"""Scale and SetResources: change a running service's replicas or resources in one
environment, under the same `<service>@<env>` lock as releases.

The runbook: read the environment's policy and refuse what goes over its bounds
(before any side effect); read the Deployment; register the undo (its replicas,
resources and override annotations exactly as they were); apply the change and the
override annotation the next release honours; wait for the rollout; notify.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import SCALE, SET_RESOURCES
    from activities.gitlab import GitLabActivities
    from activities.kubernetes.scale import ScaleActivities
    from kepler.models import Operation
    from kepler.spec import Resources
    from kepler.scale import (
        ApplyOverrides, DeploymentState, Overrides, ResourcesRequest, ScaleReport, ScaleRequest,
        bounds_problems, describe_resources, minimum_problems, request_problems,
    )
    from kepler.payloads import EnvironmentPolicy, ReadSpec, ReleaseTarget, ResolveRef, WaitRollout
    import workflows.steps.kube as kube
    from workflows.steps.platform import read_policy
    from workflows.common.approval import ApprovalGate
    from workflows.base import SEALED_AUTHORITY, Done, KeplerWorkflow, StepFailed


class _Change(ApprovalGate, KeplerWorkflow[ScaleReport]):
    """What Scale and SetResources share: everything but working out the new state."""

    async def change(self, req: ScaleRequest | ResourcesRequest, operation: Operation,
                     version: str) -> ScaleReport:
        self.report = ScaleReport(service=req.service, env=req.env, outcome="running")
        return await self.operate(operation, req.service, req.env, req.requested_by, version,
                                  lambda: self.runbook(req, version), req)

    def needs_approval(self, policy: EnvironmentPolicy) -> bool:
        """Where the policy requires approval, a scale or resources change waits for it too."""
        return policy.approval.required

    async def runbook(self, req: ScaleRequest | ResourcesRequest, version: str) -> Done:
        report: ScaleReport = self.report
        patches.retired(SEALED_AUTHORITY)
        policy: EnvironmentPolicy = await read_policy(self, req.service, req.env)
        target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=req.service)
        current: DeploymentState = await self.step(
            "read deployment", ScaleActivities.deployment_state, target)
        if not current.exists:
            raise StepFailed("read deployment", f"{req.service} has no Deployment in {req.env}: "
                             "create and release it first", "NotFound")
        report.previous_replicas, report.previous_resources = current.replicas, current.resources
        change = await self.desired(req, current)
        problems = bounds_problems(policy.bounds, change.replicas, change.resources)
        if change.resources:
            problems += request_problems(change.resources)
        if problems:
            raise StepFailed("check bounds", "; ".join(problems), "InvalidInput")
        undo = ApplyOverrides(target=target, replicas=current.replicas,
                              resources=current.resources, overrides=current.overrides,
                              requested_by=req.requested_by,
                              operation_id=workflow.info().workflow_id)
        change, undo = await self._sealed_change(req, policy, current, change, undo, version)
        self.saga.add(f"back to {current.replicas} replicas and the previous resources",
                      lambda: self._apply(undo, policy, "undo"))
        after = await self._apply(change, policy, "apply")
        report.replicas, report.resources, report.override = (
            after.replicas, after.resources, after.overrides)
        return Done("succeeded", f"{req.service} in {req.env}: {version}"
                    + (f" ({req.reason})" if req.reason else ""))

    async def _sealed_change(self, req: ScaleRequest | ResourcesRequest, policy: EnvironmentPolicy,
                             current: DeploymentState, change: ApplyOverrides,
                             undo: ApplyOverrides, version: str
                             ) -> tuple[ApplyOverrides, ApplyOverrides]:
        """Bounded below too; where the policy requires approval, approved by the
        environment's approvers (the gate names the image running there and what changes);
        both writes carry the run's authorization, which the activity checks again."""
        problems = minimum_problems(policy.bounds, change.replicas, change.resources)
        if problems:
            raise StepFailed("check bounds", "; ".join(problems), "InvalidInput", bad_input=True)
        if policy.approval.required:
            was = (f"{current.replicas} replicas" if change.replicas is not None
                   else describe_resources(current.resources))
            await self.approval_gate(policy.approval, f"{req.service} in {req.env}: {version} "
                                     f"(now {was})" + (f" ({req.reason})" if req.reason else ""),
                                     digests=[current.image] if current.image else [])
        auth = self.authorization()
        return (change.model_copy(update={"authorization": auth}),
                undo.model_copy(update={"authorization": auth, "undo": True}))

    async def desired(self, req, current: DeploymentState) -> ApplyOverrides:
        raise NotImplementedError

    async def spec_default(self, current: DeploymentState) -> tuple[int, Resources]:
        """What the service spec of the running release (else main) asks for in this
        environment: a reset goes back to it."""
        t = current.target
        sha = current.commit
        if not sha:
            sha = (await self.step("resolve ref", GitLabActivities.resolve_ref,
                                   ResolveRef(service=t.service, ref="main"))).sha
        spec = await self.step("read service spec", GitLabActivities.read_spec,
                               ReadSpec(service=t.service, sha=sha))
        return spec.replicas_in(t.env), spec.resources_in(t.env)

    async def _apply(self, change: ApplyOverrides, policy: EnvironmentPolicy,
                     verb: str) -> DeploymentState:
        state: DeploymentState = await self.step(
            f"{verb}: replicas and resources", ScaleActivities.apply_overrides, change)
        await kube.wait_rollout(self, WaitRollout(target=change.target, generation=state.generation,
                                                  timeout=policy.rollout_timeout))
        return state


@workflow.defn(name=SCALE.workflow)
class Scale(_Change):
    @workflow.run
    async def run(self, req: ScaleRequest) -> ScaleReport:
        return await self.change(req, Operation.SCALE, "reset replicas" if req.reset
                                 else f"{req.replicas} replicas")

    async def desired(self, req: ScaleRequest, current: DeploymentState) -> ApplyOverrides:
        overrides = Overrides(replicas=req.replicas, resources=current.overrides.resources)
        replicas = req.replicas
        if req.reset:
            replicas, _ = await self.spec_default(current)
        return ApplyOverrides(target=current.target, replicas=replicas, overrides=overrides,
                              requested_by=req.requested_by,
                              operation_id=workflow.info().workflow_id)


@workflow.defn(name=SET_RESOURCES.workflow)
class SetResources(_Change):
    @workflow.run
    async def run(self, req: ResourcesRequest) -> ScaleReport:
        what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (
            ("cpu", req.cpu), ("memory", req.memory), ("cpu_limit", req.cpu_limit),
            ("memory_limit", req.memory_limit)) if v)
        return await self.change(req, Operation.RESOURCES, "reset resources" if req.reset else what)

    async def desired(self, req: ResourcesRequest, current: DeploymentState) -> ApplyOverrides:
        if req.reset:
            _, resources = await self.spec_default(current)
            overrides = Overrides(replicas=current.overrides.replicas)
        else:
            resources = req.applied_to(current.resources or Resources())
            overrides = Overrides(replicas=current.overrides.replicas, resources=resources)
        return ApplyOverrides(target=current.target, resources=resources, overrides=overrides,
                              requested_by=req.requested_by,
                              operation_id=workflow.info().workflow_id)
