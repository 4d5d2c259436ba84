"""Blue-green: the new version beside the live one, then all traffic to it in one route write,
and back in one route write while the old version is still warm.

The runbook (a release whose strategy is blue-green hands over to it; the Canary workflow
runs it, with the canary's deployment, preview route, analysis, controls and undo): the
green version comes up as `<service>-canary`, reachable only with the header
`x-canary: always` (the preview route); `preview_analysis` passing rounds against it
(under a copy of `preview_mirror` % of live traffic when set); an approval at the switch
when `approve_switch`; the switch, one VirtualService write to 100 %; `post_analysis`
passing rounds at 100 %; then the rollback window, in which `kepler rollback` (an abort)
or the alert receiver switches back in one route write. When the window has passed, the
primary takes the new version (its rollout goes unseen: no traffic is on it), traffic moves
back to it and the green deployment scales to 0: the release is recorded as any release.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, NoReturn

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.canary import failed_round
    from kepler.contracts import CANARY
    from kepler.models import CanaryRequest, MirrorStage, ReleaseRequest
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from kepler import manifests
    from kepler.payloads import Commit, EnvironmentPolicy, ReleaseTarget, RouteWeights
    from kepler.spec import ServiceSpec
    from workflows.base import Done, KeplerWorkflow, OperationEnded, StepFailed

if TYPE_CHECKING:
    from kepler.canary import CanaryControl, CanaryState
    from kepler.models import CanaryProgress, OperationStatus


def chosen(req: ReleaseRequest, spec: ServiceSpec) -> bool:
    """Whether this release runs blue-green: the request's strategy, else the spec's for the
    environment. A train's members release rolling (the train's one gate approved exactly
    that); asked for explicitly, blue-green is refused where it cannot run."""
    strategy = req.strategy or spec.strategy_in(req.env)
    if strategy != "blue-green":
        return False
    if spec.type == "cronjob":
        raise StepFailed("read service spec", "strategy: blue-green is for type deployment (a "
                         "cronjob has no traffic to switch)", "InvalidInput", bad_input=True)
    if req.train_approved or req.from_env or req.image:
        if req.strategy == "blue-green":
            raise StepFailed("read service spec", "strategy: blue-green releases a ref (--ref); "
                             "a promotion (--from), a pinned image or a train's member releases "
                             "rolling, exactly its digest", "InvalidInput", bad_input=True)
        return False
    return True


async def something_live(wf: KeplerWorkflow, target: ReleaseTarget) -> bool:
    """A first release has nothing to switch from: it rolls out as any release (said so)."""
    live = await wf.step("find the live version", DeploymentActivities.snapshot, target)
    if live.exists and live.replicas and live.image != manifests.PLACEHOLDER_IMAGE:
        return True
    wf.state.notes.append(f"blue-green: nothing runs in {target.env} yet, so this first "
                          "release rolls out in place")
    return False


async def hand_over(wf: KeplerWorkflow, req: ReleaseRequest, ref: str, commit: Commit) -> NoReturn:
    """Continue as the Canary workflow running this release blue-green, under the same id:
    it verifies this signed request again, and Temporal's history that this run handed over
    (activities/temporal.py); its settings are the spec's, read again at `commit`."""
    await wf.settle_reads()
    await workflow.wait_condition(workflow.all_handlers_finished)
    # its record says where the release goes on; its outcome stays running, as a canary's
    # continued runs do (the release is not over: the Canary run ends it)
    wf.set_stage("handed over to blue-green")
    workflow.continue_as_new(workflow=CANARY.workflow, args=[CanaryRequest(
        service=req.service, env=req.env, ref=ref, requested_by=req.requested_by,
        reason=req.reason, after_freeze=req.after_freeze, break_glass=req.break_glass,
        release=req, commit=commit.sha), None])


def refuse_unless_handed_over() -> None:
    """A blue-green run comes only from its release's continue-as-new (which the claim of
    its request then checks in Temporal's history)."""
    if workflow.info().continued_run_id is None:
        raise StepFailed("verify request", "a blue-green run is started by its release "
                         "(kepler release), never on its own", "Unauthorized", bad_input=True)


class BlueGreenRunbook:
    """The Canary workflow's blue-green mode (a mixin of Canary)."""
    cs: "CanaryState | None"
    state: "OperationStatus | None"
    phase: str
    _abort: "CanaryControl | None"
    _promote: "CanaryControl | None"
    _mirror: tuple[int, Any] | None
    switched = False

    if TYPE_CHECKING:  # Canary's
        @property
        def progress(self) -> CanaryProgress: ...
        async def _round(self, req: CanaryRequest, metrics: list, interval: Any) -> tuple[str, str]: ...
        async def _shift(self, index: int) -> None: ...
        async def _start_mirror(self, mirror: MirrorStage) -> None: ...
        async def step(self, name: str, fn: Any, arg: Any, options: Any = None) -> Any: ...
        def authorization(self) -> Any: ...
        async def _promote_primary(self, req: CanaryRequest) -> None: ...
        async def approval_gate(self, policy: Any, what: str, digests: Any = (),
                                commits: Any = (), operation: str = "") -> list: ...
        def set_stage(self, stage: str) -> None: ...
        def _aborted(self) -> OperationEnded: ...
        async def notify(self, event: str, text: str) -> None: ...
        report: Any

    def take_settings(self, policy: EnvironmentPolicy, spec: ServiceSpec) -> None:
        """Its analysis as the spec says (the request's canary settings are not used)."""
        p, bg = self.progress, spec.blue_green
        p.strategy, p.weights, p.interval, p.failure_limit = (
            "blue-green", [100], bg.interval, bg.failure_limit)
        if bg.approve_switch and not policy.approval.approvers:
            raise StepFailed("read service spec", "blue_green.approve_switch needs approvers, and "
                             f"{policy.env} lists none in kepler.yaml", "InvalidInput",
                             bad_input=True)
        longest = bg.rollback_window + bg.interval * (
            bg.preview_analysis + bg.post_analysis + bg.failure_limit)
        if policy.approval.required and longest > policy.approval.valid_for:
            raise StepFailed("read service spec", f"blue_green: its analysis and rollback_window "
                             f"may last {longest}, longer than {policy.env}'s approval.valid_for "
                             f"of {policy.approval.valid_for}: the approval would expire before "
                             "the new version is promoted", "InvalidInput", bad_input=True)

    async def blue_green(self, req: CanaryRequest) -> Done:
        cs, p = self.cs, self.progress
        bg = cs.spec.blue_green
        await self._passing_rounds(req, bg.preview_analysis, "the preview")
        if self._mirror is not None:
            await self._preview()  # the copies stop before live traffic moves
        self._promote = None  # a promote skips the preview analysis, not what follows
        if bg.approve_switch:
            self.phase = "approval"
            p.waiting_on = "approval of the switch"
            approvals = await self.approval_gate(
                cs.policy.approval.model_copy(update={"required": True}),
                f"switch of {req.service} in {req.env} to {cs.version}",
                digests=[cs.image], commits=[cs.commit])
            self.report.approved_by += [a.approver for a in approvals]
        self.phase, self.switched = "switching", True  # from here an abort switches back
        await self._shift(0)  # all live traffic, one route write
        p.switched_at = workflow.now()
        await self.notify("switched", f"{req.service} {cs.version} takes all traffic in "
                          f"{req.env}; {cs.previous_image} stays warm for {bg.rollback_window}")
        await self._passing_rounds(req, bg.post_analysis, "100%")
        self.phase = "window"
        p.rollback_until = workflow.now() + bg.rollback_window
        p.waiting_on = (f"rollback window until {p.rollback_until:%H:%M:%S} UTC: kepler rollback "
                        "switches back at once")
        self.set_stage("rollback window")
        try:
            await workflow.wait_condition(lambda: bool(self._abort or self._promote),
                                          timeout=bg.rollback_window)
        except asyncio.TimeoutError:
            pass
        if self._abort:
            raise self._aborted()
        p.rollback_until = None
        await self._promote_primary(req)
        self.phase = "done"
        p.waiting_on = ""
        return Done("succeeded", f"{cs.version} is live in {req.env} (blue-green; "
                    f"{cs.previous_image} scaled down after the rollback window)")

    async def _preview(self) -> None:
        """The preview route: live traffic on stable, testers' (x-canary: always) on green."""
        await self.step("route preview to canary", IstioActivities.set_routes, RouteWeights(
            env=self.state.env, namespace=self.cs.policy.namespace, service=self.state.service,
            canary_header=True, authorization=self.authorization()))
        self._mirror = None

    async def _passing_rounds(self, req: CanaryRequest, wanted: int, where: str) -> None:
        """`wanted` passing analysis rounds of the green version; a failed one counts toward
        the failure limit, which switches back (before the switch: it never took traffic).
        A promote skips the rest."""
        p, bg = self.progress, self.cs.spec.blue_green
        passed = 0
        metrics = req.effective_metrics()
        self.phase = "analysing"
        while passed < wanted and not self._promote:
            p.next_analysis_at = workflow.now() + bg.interval
            p.waiting_on = (f"paused by {p.paused_by}: analysis continues; resume, promote or "
                            f"abort" if p.paused else f"analysis {passed + 1}/{wanted} of {where} "
                            f"at {p.next_analysis_at:%H:%M:%S} UTC")
            self.set_stage("paused" if p.paused else f"analysing {where}")
            try:
                await workflow.wait_condition(lambda: bool(self._promote), timeout=bg.interval)
                continue
            except asyncio.TimeoutError:
                pass
            verdict, detail = await self._round(req, metrics, bg.interval)
            p.rounds += 1
            if verdict == "failed":
                if failed_round(p, self.state.notes, where, detail):
                    back = " switched back" if self.switched else " never took live traffic"
                    raise OperationEnded("rolled_back", f"analysis of {where} failed ({detail});"
                                         f"{back}")
            elif verdict == "passed" and not p.paused:
                passed += 1
