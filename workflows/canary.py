"""Canary: move traffic to a new version step by step while Prometheus says it is healthy.

The runbook: resolve the ref; the image by digest (as ReleaseVersion); approval when
policy asks; the spec's release hooks around the deploy of `<service>-canary`, before
any traffic (workflows/steps/hooks.py); route testers to it (`x-canary: always`);
then, for each weight, wait the interval and analyse the canary's metrics. A failed round
counts toward the failure limit and holds the weight; reaching the limit aborts. After the
last weight passes (or on `promote`), an optional approval, then promotion: the primary
gets the new release, rolls out, takes 100 % of the traffic; the canary scales to 0.

Before any traffic moves, the undo "route 100 % to stable, scale the canary to 0" is in
the saga: an abort (at once, in any phase), the failure limit, the deadline, a failed step
or a cancellation ends there. Long canaries continue-as-new, so each run's history is bounded.
A blue-green release runs here too, its own way (workflows/bluegreen.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Awaitable, TypeVar

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import CANARY
    from activities.gitlab import GitLabActivities
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.prometheus import PrometheusActivities
    from kepler import manifests, naming, promql
    from kepler.canary import (CanaryAnalysis, CanaryControl, CanaryReport, CanaryState, evaluate,
                               failed_round, failure_counts, new_checks)
    from kepler.models import CanaryProgress, CanaryRequest, MirrorStage, Operation
    from kepler.scale import Overrides
    from kepler.payloads import (ApplyObjects, ApplyRelease, Commit, EnvironmentPolicy, ReadSpec,
                              ReleaseTarget, ResolveRef, RouteWeights, ScaleDeployment, WaitRollout)
    import workflows.steps.carried as carried_state
    import workflows.steps.hooks as release_hooks
    import workflows.steps.freeze as freeze
    import workflows.steps.kube as kube
    from workflows.common.interrupt import Stopped, unless
    from workflows.steps.platform import check_bounds, check_canary_policy, read_policy
    from workflows.common.approval import ApprovalGate
    from workflows.base import (SEALED_AUTHORITY, UNDO, Done, KeplerWorkflow, OperationEnded,
                                StepFailed, StepOptions, Undo)
    from workflows.common.canary_controls import CanaryControls
    from workflows.steps.promotion import canary_image
    from workflows.bluegreen import BlueGreenRunbook, refuse_unless_handed_over

T = TypeVar("T")
KEEP_STEPS = 30  # step records carried across continue-as-new (the rest is in history)
ANALYSIS_ATTEMPTS = 3


@workflow.defn(name=CANARY.workflow)
class Canary(BlueGreenRunbook, CanaryControls, ApprovalGate, KeplerWorkflow[CanaryReport]):
    def __init__(self) -> None:
        super().__init__()
        self.cs: CanaryState | None = None
        self.phase = "preparing"  # preparing | analysing | approval | promoting | done
        self._abort: CanaryControl | None = None
        self._promote: CanaryControl | None = None
        self._run_rounds = 0
        self._approve_promotion = False
        self._retreat: list[Undo] = []  # scale the canary to 0, route 100 % to stable
        self._hook_undo: list[Undo] = []  # the pre_deploy hook's undo, registered before it
        self._scaled = Overrides()  # the primary's `kepler scale|resources` overrides
        # the mirror stage (% of live traffic copied to the canary, until when): never carried
        # across continue-as-new, which does not happen during it (CanaryRequest bounds it)
        self._mirror: tuple[int, datetime] | None = None

    @workflow.run
    async def run(self, req: CanaryRequest, carried: CanaryState | None = None) -> CanaryReport:
        if not isinstance(req, CanaryRequest):  # started with one argument: the SDK types
            req = CanaryRequest.model_validate(req)  # arguments only when all are given
        self._approve_promotion = req.approve_promotion
        self.handed_over = req.release is not None  # a blue-green release (workflows/bluegreen.py)
        self.report = CanaryReport(service=req.service, env=req.env, outcome="running",
                                   strategy="blue-green" if self.handed_over else "canary")
        return await self.operate(Operation.CANARY, req.service, req.env, req.requested_by,
                                  req.ref, lambda: self.abortable(req, carried), req.release or req)

    async def abortable(self, req: CanaryRequest, carried: CanaryState | None) -> Done:
        """The runbook, stopped the moment an abort is accepted, whatever it is doing."""
        patches.retired(SEALED_AUTHORITY)  # controls are signed
        return await self._unless_aborted(self.runbook(req, carried))

    async def _unless_aborted(self, work: Awaitable[T]) -> T:
        try:
            return await unless(work, lambda: self._abort is not None)
        except Stopped:  # in-flight steps were cancelled; the retreat then runs
            raise self._aborted() from None

    async def runbook(self, req: CanaryRequest, carried: CanaryState | None) -> Done:
        report: CanaryReport = self.report
        if carried is None:
            await self._prepare(req)
        else:
            await self._carry_on(carried)
        report.commit, report.image = self.cs.commit, self.cs.image
        report.previous_image = self.cs.previous_image
        self.record_change(self.cs.commit, self.cs.committed_at, self.cs.spec.team)
        if self.handed_over:
            return await self.blue_green(req)
        await self._analyse(req)
        if self._abort:
            raise self._aborted()
        if req.approve_promotion:
            self.phase = "approval"
            self.progress.waiting_on = "approval before promotion"
            approvals = await self.approval_gate(
                self.cs.policy.approval.model_copy(update={"required": True}),
                f"promotion of the {req.service} canary {self.cs.version} in {req.env}",
                digests=[self.cs.image], commits=[self.cs.commit])
            report.approved_by += [a.approver for a in approvals]
        await self._promote_primary(req)
        self.phase = "done"
        self.progress.waiting_on = ""
        return Done("promoted", f"{self.cs.version} promoted in {req.env} after "
                    f"{self.progress.rounds} analysis rounds")

    def before_undo(self, outcome: str) -> None:
        self.phase = "done"
        if self.state.canary is None:  # ended before the canary existed
            self.state.canary = CanaryProgress(weights=[], interval=timedelta(0), failure_limit=0)
        else:
            self.progress.waiting_on = "traffic back to stable"

    def on_end(self, outcome: str) -> None:
        p, report = self.progress, self.report
        if outcome != "succeeded":
            p.waiting_on = ""
        report.weight, report.failed_checks = p.weight, p.failed_checks
        report.checks, report.runs = list(p.checks), p.run

    @property
    def progress(self) -> CanaryProgress:
        assert self.state is not None and self.state.canary is not None
        return self.state.canary

    # --- before any traffic moves ------------------------------------------------------------

    async def _prepare(self, req: CanaryRequest) -> None:
        policy: EnvironmentPolicy = await read_policy(self, req.service, req.env)
        check_canary_policy(policy, req)
        checked = await freeze.check(self, policy, req)  # refused, waited out, or break-glass
        self.state.canary = CanaryProgress(
            weights=req.weights(), interval=req.interval, failure_limit=req.failure_limit,
            checks=new_checks(req.effective_metrics()))
        if self.handed_over:
            refuse_unless_handed_over()
        commit = (Commit(sha=req.commit, short_id=req.commit[:8], title=req.ref)
                  if self.handed_over and req.commit else await self.step(
                      "resolve ref", GitLabActivities.resolve_ref,
                      ResolveRef(service=req.service, ref=req.ref)))
        version = f"{req.ref}@{commit.short_id}"
        self.set_version(version)
        spec = await self.step("read service spec", GitLabActivities.read_spec,
                               ReadSpec(service=req.service, sha=commit.sha))
        check_bounds(self, policy, spec.replicas_in(req.env), spec.resources_in(req.env))
        if self.handed_over:
            self.take_settings(policy, spec)
        if req.mirror is not None and not spec.idempotent:
            raise StepFailed("read service spec", f"{req.service}'s spec says idempotent: false: "
                             "its requests change things, so no copy of them goes to a canary "
                             "(no mirror stage)", "InvalidInput", bad_input=True)
        primary = await kube.snapshot(self, self._target(policy, primary=True))
        if not primary.exists or not primary.replicas or primary.image == manifests.PLACEHOLDER_IMAGE:
            raise StepFailed("record current release", f"{req.service} runs nothing in {req.env} "
                             "yet: release a first version (kepler release) before a canary",
                             "NotFound")
        self._scaled = kube.overrides_of(primary)  # `kepler scale|resources` hold, as in a release
        image = await canary_image(self, policy, req, commit.sha, checked.frozen)  # on its path
        now = workflow.now()
        self.cs = CanaryState(progress=self.progress, policy=policy, spec=spec, commit=commit.sha,
                              version=version, image=image, previous_image=primary.image,
                              started_at=now, deadline=now + req.max_duration,
                              committed_at=commit.committed_at)
        self.phase = "approval"  # the usual gate or a break-glass one; a freeze since refuses
        approvals = await freeze.gate(self, policy, req, checked, f"canary of {req.service} "
                                      f"{req.ref} in {req.env}", [image], [commit.sha])
        self.report.approved_by = [a.approver for a in approvals]
        self.cs.break_glass = req.reason if checked.frozen else ""  # marked in its history
        self.phase = "preparing"
        self._hook_undo = await release_hooks.canary(self, self.cs, lambda: self._deploy_canary(req))
        if self._abort:
            raise self._aborted()
        mirror = req.mirror or (MirrorStage(percent=spec.blue_green.preview_mirror) if
                                self.handed_over and spec.blue_green.preview_mirror else None)
        if self.handed_over and mirror is None:
            await self._preview()
            live = "no live traffic yet"
        elif mirror is not None:
            await self._start_mirror(mirror)
            live = f"a copy of {mirror.percent}% of the traffic" + (
                f" for {mirror.duration}" if req.mirror else "")
        else:
            await self._shift(0)
            live = f"{self.progress.weight}% of the traffic"
        await self.notify("started", f"{'blue-green' if self.handed_over else 'canary'} "
                          f"{version} in {req.env}: {live}; testers reach it "
                          "with the header x-canary: always")

    async def _deploy_canary(self, req: CanaryRequest) -> None:
        """Create `<service>-canary` if missing, then (re-)apply the new release and scale it up."""
        cs, target = self.cs, self._target(self.cs.policy, primary=False)
        self._register_retreat()  # after the pre_deploy undo: undone before it
        self.progress.waiting_on = f"rollout of {target.name()}"
        replicas = max(1, cs.spec.replicas_in(req.env) if self._scaled.replicas is None
                       else self._scaled.replicas)
        await self.step("create canary deployment", DeploymentActivities.apply_objects, ApplyObjects(
            env=req.env, run_id=workflow.info().run_id, manifests=[manifests.deployment(
                cs.spec, req.env, cs.policy.namespace, name=target.name(), version="canary",
                image=cs.image, replicas=0)]))
        change = kube.authorized(self, ApplyRelease(
            target=target, image=cs.image, replicas=replicas, config=cs.spec.config_files,
            env=cs.spec.env_in(req.env), resources=self._scaled.resources or cs.spec.resources_in(req.env),
            port=cs.spec.port, health_path=cs.spec.health_path, annotations=self._annotations(req),
            pod=manifests.pod_shape(cs.spec, req.env, name=target.name())))
        result = await self.step("deploy canary", DeploymentActivities.apply_release, change)
        # an abort does not wait for the canary to come up
        await self._unless_aborted(kube.wait_rollout(self, WaitRollout(
            target=target, generation=result.generation, timeout=cs.policy.rollout_timeout)))

    async def _carry_on(self, carried: CanaryState) -> None:
        """A continued run (only ever from this workflow's own continue-as-new, its state
        sealed by the worker: anything else is refused): restore the state and the undo,
        go on analysing."""
        await carried_state.check(self, carried)
        self.identify(carried.policy.signers, gated=False)  # who asked, verified again
        self.gate_approvals = carried.approvals
        self.cs = carried
        self.state.canary = carried.progress
        self.state.steps, self.state.notes = carried.steps, carried.notes
        self.set_version(carried.version)
        self.progress.run += 1
        self._hook_undo = release_hooks.canary_carried(self, carried)
        self._register_retreat()

    def _register_retreat(self) -> None:
        self._retreat = [
            self.saga.add(f"scale {naming.canary_name(self.state.service)} to 0", lambda: self.step(
                "scale canary to 0", DeploymentActivities.scale, ScaleDeployment(
                    target=self._target(self.cs.policy, primary=False), replicas=0), UNDO)),
            self.saga.add("route 100% to stable", self._route_stable)]

    async def _route_stable(self) -> None:
        await self.step("route 100% to stable", IstioActivities.set_routes, RouteWeights(
            env=self.state.env, namespace=self.cs.policy.namespace, service=self.state.service),
            UNDO)
        self.progress.weight, self._mirror = 0, None

    # --- the analysis loop ---------------------------------------------------------------------

    async def _analyse(self, req: CanaryRequest) -> None:
        """Returns when every weight has passed, or on promote/abort; raises OperationEnded."""
        self.phase = "analysing"
        p = self.progress
        metrics = req.effective_metrics()
        while not (self._abort or self._promote):
            if self._mirror is None and (self._run_rounds >= req.rounds_per_run
                                         or workflow.info().is_continue_as_new_suggested()):
                await self._continue_as_new(req)
            now = workflow.now()
            if now >= self.cs.deadline:
                raise OperationEnded("expired", f"the canary's deadline ({req.max_duration}) passed "
                                  f"at {p.weight}% (step {p.step}/{len(p.weights)})")
            p.next_analysis_at = now + req.interval
            p.waiting_on = (f"paused by {p.paused_by}: analysis continues; resume, promote or abort"
                            if p.paused else f"analysis at {p.next_analysis_at:%H:%M:%S} UTC of "
                            f"{self._where()} (step {p.step}/{len(p.weights)})")
            self.set_stage("paused" if p.paused else f"mirror {self._mirror[0]}%" if self._mirror
                           else f"canary {p.weight}%")
            try:
                await workflow.wait_condition(lambda: bool(self._abort or self._promote),
                                              timeout=min(req.interval, self.cs.deadline - now))
                continue
            except asyncio.TimeoutError:
                pass
            if workflow.now() >= self.cs.deadline:
                continue
            verdict, detail = await self._round(req, metrics, req.interval)
            p.rounds += 1
            self._run_rounds += 1
            if verdict == "failed":
                if failed_round(p, self.state.notes, self._where(), detail):
                    raise OperationEnded("rolled_back", f"failure limit {p.failure_limit} reached at "
                                      f"{self._where()}: {detail} ({failure_counts(p)})")
            elif verdict == "halt" and not p.paused:
                p.paused, p.paused_by = True, "the no-data policy"
                self.state.notes.append(f"halted at {p.weight}%: {detail}")
            elif verdict == "passed" and not p.paused:
                if self._mirror is not None:  # live traffic moves once the stage has lasted
                    if workflow.now() >= self._mirror[1]:
                        await self._shift(0)
                elif p.step >= len(p.weights):
                    return
                else:
                    await self._shift(p.step)

    def _where(self) -> str:
        return f"the {self._mirror[0]}% mirror" if self._mirror else f"{self.progress.weight}%"

    async def _round(self, req: CanaryRequest, metrics: list,
                     interval: timedelta) -> tuple[str, str]:
        analysis = CanaryAnalysis(
            env=req.env, namespace=self.cs.policy.namespace, service=req.service,
            workload=naming.canary_name(req.service),
            interval=promql.duration(interval.total_seconds()), metrics=metrics)
        result, error = None, ""
        try:
            result = await self.attempt(f"analysis at {self._where()}",
                                        PrometheusActivities.analyse, analysis, StepOptions(
                schedule_to_close=min(interval, timedelta(minutes=2)),
                heartbeat=timedelta(seconds=20), attempts=ANALYSIS_ATTEMPTS,
                non_retryable=("InvalidInput",)))
        except StepFailed as e:  # no verdict this round: evaluate() counts it as a query error
            if e.error_type == "InvalidInput":
                raise StepFailed("analysis", e.cause, e.error_type) from e
            error = e.cause
        return evaluate(self.progress, metrics, result, error, req.no_data, req.query_error_limit)

    async def _shift(self, index: int) -> None:
        weight, ns = self.progress.weights[index], self.cs.policy.namespace
        await self.step(f"route {weight}% to canary", IstioActivities.set_routes, RouteWeights(
            env=self.state.env, namespace=ns, service=self.state.service, stable=100 - weight,
            canary=weight, canary_header=True, authorization=self.authorization()))
        self.progress.step, self.progress.weight = index + 1, weight
        self._mirror = None  # the route written has no mirror

    async def _start_mirror(self, mirror: MirrorStage) -> None:
        """Live traffic stays on stable; a copy of `percent` % of it goes to the canary, whose
        answers Istio discards, and the analysis reads the canary's own metrics under it."""
        await self.step(f"mirror {mirror.percent}% to canary", IstioActivities.set_routes, RouteWeights(
            env=self.state.env, namespace=self.cs.policy.namespace, service=self.state.service,
            canary_header=True, mirror=mirror.percent, authorization=self.authorization()))
        self._mirror = (mirror.percent, workflow.now() + mirror.duration)

    async def _continue_as_new(self, req: CanaryRequest) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._abort or self._promote:
            return
        self.cs.progress = self.progress
        self.cs.steps, self.cs.notes = self.state.steps[-KEEP_STEPS:], self.state.notes[-KEEP_STEPS:]
        self.cs.approvals = self.gate_approvals
        # pinned across continue-as-new: the next run checks the seal of a state this version
        # dumped, byte for byte (activities/authority.py), and only then can undo anything
        workflow.continue_as_new(args=[req, await carried_state.sealed(self, self.cs)])

    # --- the end -------------------------------------------------------------------------------

    async def _promote_primary(self, req: CanaryRequest) -> None:
        self.phase = "promoting"
        cs, p = self.cs, self.progress
        self.set_stage("promoting")
        primary = self._target(cs.policy, primary=True)
        before = await kube.snapshot(self, primary)
        restore = self.saga.add(f"restore {before.image} and its config",
                                lambda: kube.restore_and_wait(self, before, cs.policy.rollout_timeout))
        p.waiting_on = f"rollout of {req.service} with {cs.image}"
        scaled = kube.overrides_of(before)
        result = await kube.apply(self, ApplyRelease(
            target=primary, image=cs.image, config=cs.spec.config_files, env=cs.spec.env_in(req.env),
            replicas=cs.spec.replicas_in(req.env) if scaled.replicas is None else scaled.replicas,
            resources=scaled.resources or cs.spec.resources_in(req.env), port=cs.spec.port,
            health_path=cs.spec.health_path, annotations=self._annotations(req),
            pod=manifests.pod_shape(cs.spec, req.env)))
        await kube.wait_rollout(self, WaitRollout(target=primary, generation=result.generation,
                                                  timeout=cs.policy.rollout_timeout))
        p.waiting_on = "traffic back to the primary"
        await self._route_stable()
        await self.step("scale canary to 0", DeploymentActivities.scale, ScaleDeployment(
            target=self._target(cs.policy, primary=False), replicas=0))
        self.phase = "done"  # committed: no abort or switch-back from here
        self.saga.discard(restore, *self._retreat, *self._hook_undo)
        await kube.record_release(self, primary, cs.image, cs.commit, req.ref, req.requested_by,
                                  undo=release_hooks.recorded_undo(cs.spec.hooks, cs.hooks_ran),
                                  break_glass=cs.break_glass)

    def _aborted(self) -> OperationEnded:
        a = self._abort
        weight = self.state.canary.weight if self.state.canary else 0
        if self.switched:  # blue-green: switched back, the old version warm all along
            return OperationEnded("rolled_back", f"switched back by {a.by}"
                                  + (f": {a.reason}" if a.reason else ""))
        return OperationEnded("aborted", f"aborted by {a.by}" + (f": {a.reason}" if a.reason else "")
                              + f" at {weight}%")

    def _target(self, policy: EnvironmentPolicy, primary: bool) -> ReleaseTarget:
        return ReleaseTarget(env=self.state.env, namespace=policy.namespace, service=self.state.service,
                             deployment="" if primary else naming.canary_name(self.state.service))

    def _annotations(self, req: CanaryRequest) -> dict[str, str]:
        return kube.release_annotations(req.requested_by, commit=self.cs.commit, version=req.ref)
