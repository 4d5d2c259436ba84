"""AutoPromotion: a release that went live in one environment, promoted to the next by
itself (`promotion.<target>.auto` in kepler.yaml; kepler/promotion.py).

The runbook: wait the path's soak on a durable timer, counted from when the release went
live in the source; a newer release offered meanwhile supersedes the waiting one (the
offer is a signal, so nothing polls); check the source still runs exactly that digest,
healthy; then ask for the target's release of exactly it — a ReleaseVersion like any
other (lock, the target's approval of that digest, undo), requested and signed as the
platform's promotions identity, which never approves. A newer offer that arrives while
that release runs is promoted after it, in a new run. Skipped and stale ends notify.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import AUTO_PROMOTION
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.platform import PlatformActivities
    from activities.promotion import PromotionActivities
    from kepler import naming
    from kepler.models import Operation, ReleaseRequest
    from kepler.contracts import OFFER, PROMOTION_REPORT
    from kepler.promotion import AutoPromotionReport, AutoPromotionRequest, LiveRelease
    from kepler.payloads import EnvironmentPolicy, PolicyQuery, ReleaseTarget
    from workflows.base import COORDINATORS, Done, KeplerWorkflow
    from workflows.common.children import child_operation
    from workflows.common.continuation import continue_as_new_on_current_version
    from workflows.legacy.coordinators import AutoPromotionBefore

BUSY_RETRY = timedelta(minutes=5)  # the target's lock is held: try again after this
BUSY_TRIES = 12


async def signed_release(candidate: AutoPromotionRequest,
                         run: Callable[[Any, Any, str], Awaitable[Any]]) -> ReleaseRequest:
    """The target's release of exactly the candidate, signed as the promotions identity
    by the activity `run` calls (each attempt signs anew: a signed request starts one run)."""
    request: ReleaseRequest = await run(PromotionActivities.sign_request, ReleaseRequest(
        service=candidate.service, env=candidate.target, from_env=candidate.source,
        image=candidate.image, commit=candidate.commit, requested_by=candidate.requested_by,
        after_freeze=True,  # a freeze holds it until it ends, it does not drop it
        reason=f"automatic promotion of {candidate.version or candidate.commit[:12]} "
               f"from {candidate.source}"), "sign the promotion")
    return request


@workflow.defn(name=AUTO_PROMOTION.workflow)
class AutoPromotion(AutoPromotionBefore, KeplerWorkflow[AutoPromotionReport]):
    def __init__(self) -> None:
        super().__init__()
        self.report = AutoPromotionReport()
        self._offers: list[AutoPromotionRequest] = []

    @workflow.signal(name=OFFER.name)
    def offer(self, req: AutoPromotionRequest) -> None:
        self._offers.append(req)

    @workflow.query(name=PROMOTION_REPORT.name)
    def promotion(self) -> AutoPromotionReport:
        return self.report

    @workflow.run
    async def run(self, req: AutoPromotionRequest) -> AutoPromotionReport:
        if not patches.since(COORDINATORS):
            return await self.run_before(req)
        return await self.operate(Operation.PROMOTION, req.service, req.target, req.requested_by,
                                  req.version or req.commit[:12], lambda: self.runbook(req), req)

    async def runbook(self, req: AutoPromotionRequest) -> Done:
        candidate = req
        while True:
            candidate = self._newest(candidate)
            self.report.candidate, self.report.soak_until = candidate, None
            self._at(f"reading {candidate.target}'s promotion path")  # one candidate's stage only
            path = (await self._read_policy(candidate.service, candidate.target)).promotion
            if path is None or not path.auto or path.source != candidate.source:
                return self._ended("skipped", f"promotion.{candidate.target} no longer promotes "
                                   f"automatically from {candidate.source}")
            self.report.soak_until = candidate.since + path.soak
            self.set_outcome("soaking")
            self._at(f"soaking until {self.report.soak_until:%Y-%m-%d %H:%M:%S} UTC")
            if await self._newer_within(candidate, self.report.soak_until - workflow.now()):
                continue  # superseded while it soaked
            self.set_outcome("running")
            source = await self._read_policy(candidate.service, candidate.source)
            live: LiveRelease = await self.step(
                f"read {candidate.source}'s release", DeploymentActivities.live_release,
                ReleaseTarget(env=candidate.source, namespace=source.namespace,
                              service=candidate.service))
            if not live.healthy or live.image != candidate.image:
                if self._newer(candidate):
                    continue
                return self._ended("stale", f"{candidate.source} no longer runs "
                                   f"{candidate.version} ({candidate.image}) healthy: "
                                   f"{live.detail or 'it runs ' + live.image}")
            done = await self._release(candidate)
            if self._newer(candidate):  # arrived while the release ran: promote it next
                continue_as_new_on_current_version(self._newest(candidate))
            return done

    async def _release(self, candidate: AutoPromotionRequest) -> Done:
        """The target's ReleaseVersion of exactly this digest, under its lock; a lock held
        by another operation is tried again on a timer, unless a newer offer comes."""
        child_id = naming.workflow_id(candidate.service, candidate.target)
        self.report.release_id = child_id
        for attempt in range(BUSY_TRIES):
            request = await signed_release(
                candidate, lambda method, arg, name: self.step(name, method, arg))
            self._at(f"releasing to {candidate.target}")
            ending = await child_operation(
                request, child_id, f"promote {candidate.service} {candidate.version} from "
                f"{candidate.source} to {candidate.target} (automatic)",
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL)
            if ending.outcome == "busy":
                self._at(f"waiting for {child_id} to be free ({attempt + 1}/{BUSY_TRIES})")
                if await self._newer_within(candidate, BUSY_RETRY):
                    return self._ended("skipped", "a newer release was offered while the "
                                       "target was busy")
                continue
            self.report.release = ending.report
            detail = (f"{candidate.version} is live in {candidate.target}, promoted from "
                      f"{candidate.source}" if ending.report is not None else ending.message)
            return self._ended(ending.outcome, detail, notify=False)  # the release told it
        return self._ended("skipped", f"{child_id} stayed busy with other operations for "
                           f"{BUSY_RETRY * BUSY_TRIES}; promote it with kepler release --from "
                           f"{candidate.source}")

    async def _read_policy(self, service: str, env: str) -> EnvironmentPolicy:
        policy: EnvironmentPolicy = await self.step(
            f"read {env}'s policy", PlatformActivities.environment_policy,
            PolicyQuery(service=service, env=env))
        return policy

    def _at(self, stage: str) -> None:
        """The stage, in `status`, the report and the Temporal UI's details."""
        self.report.stage = stage
        self.set_stage(stage)
        workflow.set_current_details(self._details())

    def _ended(self, outcome: Any, detail: str, notify: bool = True) -> Done:
        self.report.outcome, self.report.detail = outcome, detail
        self._at("done")
        c = self.report.candidate
        what = f"automatic promotion of {c.service} {c.version} to {c.target}" if c else "promotion"
        return Done(outcome if outcome in ("skipped", "stale") else "promotion",
                    f"{what}: {outcome}: {detail}", outcome, notify)

    # --- offers -------------------------------------------------------------------------------

    def _newer(self, candidate: AutoPromotionRequest) -> bool:
        return any(o.release_id != candidate.release_id and o.since >= candidate.since
                   for o in self._offers)

    def _newest(self, candidate: AutoPromotionRequest) -> AutoPromotionRequest:
        """The newest release offered, the ones it supersedes noted. An offer dated in the
        future (only a hand-made one can be) counts from now: it cannot hold the path."""
        now = workflow.now()
        self._offers = [o if o.since <= now else o.model_copy(update={"since": now})
                        for o in self._offers]
        if candidate.since > now:
            candidate = candidate.model_copy(update={"since": now})
        for offer in sorted(self._offers, key=lambda o: o.since):
            if offer.release_id != candidate.release_id and offer.since >= candidate.since:
                self.report.superseded.append(candidate.version or candidate.commit[:12])
                candidate = offer
        self._offers.clear()
        return candidate

    async def _newer_within(self, candidate: AutoPromotionRequest, wait: timedelta) -> bool:
        """Wait up to `wait` (a durable timer) for a newer offer; True if one came."""
        if wait <= timedelta(0):
            return self._newer(candidate)
        try:
            await workflow.wait_condition(lambda: self._newer(candidate), timeout=wait)
        except asyncio.TimeoutError:
            return False
        return True

    def _details(self) -> str:
        """What the Temporal UI shows: where the artifact stands on its path."""
        c, r = self.report.candidate, self.report
        if c is None:
            return r.stage
        lines = [f"**{c.service}**: {c.version or c.commit[:12]} ({c.image.rsplit('@', 1)[-1][:19]}) "
                 f"live in {c.source} since {_utc(c.since)}",
                 f"soak until {_utc(r.soak_until)}" if r.soak_until else "",
                 f"{c.target}: {r.stage}" + (f" — {r.outcome}: {r.detail}" if r.outcome != "running" else ""),
                 f"superseded: {', '.join(r.superseded)}" if r.superseded else ""]
        return "\n\n".join(line for line in lines if line)


def _utc(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when else "-"
