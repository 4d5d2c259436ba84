"""ScheduledRelease and AutoPromotion as they ran before COORDINATORS put them in the one
lifecycle: their own status types, hand-built activity options, no notification of their
own ending. New runs never come here; runs begun before the patch replay through it (those
begun before the patches 0.2.0 retired, ONE_LIFECYCLE, FREEZE_WINDOWS and SEALED_AUTHORITY,
no longer do: docs/architecture.md, "Patches")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.temporal import TemporalActivities
    from activities.platform import PlatformActivities
    from kepler import naming
    from kepler.decommission import RunningQuery
    from kepler.freeze import in_force
    from kepler.promotion import AutoPromotionReport, AutoPromotionRequest, LiveRelease
    from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
    from kepler.payloads import EnvironmentPolicy, PolicyQuery, ReleaseTarget
    from workflows.base import ONE_LIFECYCLE, SEALED_AUTHORITY
    from workflows.common.children import child_operation
    from workflows.common.continuation import continue_as_new_on_current_version
    from workflows.common.options import QUICK, RETRY
    from workflows.steps.freeze import FREEZE_WINDOWS


async def _activity(method: Callable[..., Any], arg: Any, summary: str) -> Any:
    return await workflow.execute_activity_method(
        method, arg, summary=summary, start_to_close_timeout=QUICK.start_to_close,
        schedule_to_close_timeout=QUICK.schedule_to_close,
        retry_policy=RetryPolicy(**RETRY, non_retryable_error_types=list(QUICK.non_retryable)))


async def scheduled_release(result: ScheduledReleaseReport,
                            req: ScheduledReleaseRequest) -> ScheduledReleaseReport:
    rel = req.release
    child_id = naming.workflow_id(rel.service, rel.env)
    result.release_id = child_id
    workflow.deprecate_patch(ONE_LIFECYCLE)
    busy = await _activity(TemporalActivities.running_operations,
                           RunningQuery(service=rel.service, envs=[]),
                           "check nothing runs on the whole service")
    if busy:
        result.outcome, result.detail = "skipped", "; ".join(busy)
        return result
    if not rel.after_freeze:
        workflow.deprecate_patch(FREEZE_WINDOWS)
        policy: EnvironmentPolicy = await _activity(
            PlatformActivities.environment_policy, PolicyQuery(service=rel.service, env=rel.env),
            "read the freeze windows")
        adhoc = await _activity(TemporalActivities.active_freeze, rel.env, "check freeze")
        frozen = in_force(policy.freeze, adhoc, rel.env, workflow.now())
        if frozen is not None:
            result.outcome, result.detail = "skipped", f"not released: {frozen.describe()}"
            return result
    ending = await child_operation(
        rel, child_id, f"scheduled release {rel.service} "
        f"{rel.ref or 'from ' + str(rel.from_env)} to {rel.env} ({req.cron})")
    if ending.outcome == "busy":
        result.outcome = "skipped"
        result.detail = f"{child_id} was busy with another operation at fire time"
    else:
        result.outcome, result.report, result.detail = ending.outcome, ending.report, ending.message
    return result


class AutoPromotionBefore:
    """The runbook of an AutoPromotion begun before COORDINATORS; `promotion.AutoPromotion`
    provides the offers (_newest, _newer, _newer_within) and the UI details."""
    report: AutoPromotionReport

    if TYPE_CHECKING:  # AutoPromotion's
        def _newest(self, candidate: AutoPromotionRequest) -> AutoPromotionRequest: ...
        def _newer(self, candidate: AutoPromotionRequest) -> bool: ...
        async def _newer_within(self, candidate: AutoPromotionRequest, wait: Any) -> bool: ...
        def _details(self) -> str: ...

    async def run_before(self, req: AutoPromotionRequest) -> AutoPromotionReport:
        candidate = req
        while True:
            candidate = self._newest(candidate)
            self.report.candidate = candidate
            path = (await self._policy(candidate.service, candidate.target)).promotion
            if path is None or not path.auto or path.source != candidate.source:
                return self._end("skipped", f"promotion.{candidate.target} no longer promotes "
                                 f"automatically from {candidate.source}")
            self.report.soak_until = candidate.since + path.soak
            self._stage(f"soaking until {self.report.soak_until:%Y-%m-%d %H:%M:%S} UTC")
            if await self._newer_within(candidate, self.report.soak_until - workflow.now()):
                continue
            source = await self._policy(candidate.service, candidate.source)
            self._stage(f"checking {candidate.source}")
            live: LiveRelease = await _activity(
                DeploymentActivities.live_release, ReleaseTarget(
                    env=candidate.source, namespace=source.namespace, service=candidate.service),
                f"read {candidate.source}'s release")
            if not live.healthy or live.image != candidate.image:
                if self._newer(candidate):
                    continue
                return self._end("stale", f"{candidate.source} no longer runs {candidate.version} "
                                 f"({candidate.image}) healthy: "
                                 f"{live.detail or 'it runs ' + live.image}")
            await self._release_before(candidate)
            if self._newer(candidate):
                continue_as_new_on_current_version(self._newest(candidate))
            return self.report

    async def _release_before(self, candidate: AutoPromotionRequest) -> None:
        from workflows.promotion import BUSY_RETRY, BUSY_TRIES, signed_release

        workflow.deprecate_patch(SEALED_AUTHORITY)
        child_id = naming.workflow_id(candidate.service, candidate.target)
        self.report.release_id = child_id
        for attempt in range(BUSY_TRIES):
            request = await signed_release(candidate, _activity)  # a signed request starts one run
            self._stage(f"releasing to {candidate.target}")
            ending = await child_operation(
                request, child_id, f"promote {candidate.service} {candidate.version} from "
                f"{candidate.source} to {candidate.target} (automatic)",
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL)
            if ending.outcome == "busy":
                self._stage(f"waiting for {child_id} to be free ({attempt + 1}/{BUSY_TRIES})")
                if await self._newer_within(candidate, BUSY_RETRY):
                    self._end("skipped", "a newer release was offered while the target was busy")
                    return
                continue
            if ending.report is not None:
                self.report.release = ending.report
                self._end(ending.outcome, f"{candidate.version} is live in "
                          f"{candidate.target}, promoted from {candidate.source}")
            else:
                self._end(ending.outcome, ending.message)
            return
        self._end("skipped", f"{child_id} stayed busy with other operations for "
                  f"{BUSY_RETRY * BUSY_TRIES}; promote it with kepler release --from {candidate.source}")

    async def _policy(self, service: str, env: str) -> EnvironmentPolicy:
        policy: EnvironmentPolicy = await _activity(
            PlatformActivities.environment_policy, PolicyQuery(service=service, env=env),
            f"read {env}'s policy")
        return policy

    def _stage(self, stage: str) -> None:
        self.report.stage = stage
        workflow.set_current_details(self._details())

    def _end(self, outcome: Any, detail: str) -> AutoPromotionReport:
        self.report.outcome, self.report.detail = outcome, detail
        self._stage("done")
        return self.report
