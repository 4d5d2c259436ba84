"""The promotion steps of ReleaseVersion: what is live and healthy in the environment
promoted from, soaked long enough, taken exactly as it is; and, after a release that
went live, offering it to the automatic promotions from here (kepler/promotion.py)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.platform import PlatformActivities
    from activities.prometheus import PrometheusActivities
    from activities.promotion import PromotionActivities
    from kepler.models import ReleaseRequest
    from kepler.promotion import AutoPromotionRequest, LiveRelease
    from kepler.steps import EnvironmentPolicy, PolicyQuery, ReleaseTarget, VerifyRelease
    from workflows.base import KeplerWorkflow, StepFailed

# Promotions verify the source with Prometheus where the path says so, and a release that
# went live offers itself to the automatic promotions from its environment.
AUTO_PROMOTION = "kepler-auto-promotion"


async def source_release(wf: KeplerWorkflow, req: ReleaseRequest,
                         policy: EnvironmentPolicy) -> LiveRelease:
    """The release to promote into `req.env`, or a refusal (exit 3) before any change:
    nothing healthy there, not the digest the request pins, live there for less than the
    path's soak, or (`verify_with_prometheus`) failing its checks there."""
    source, path = req.from_env, policy.promotion
    step = f"read {source}'s release"
    if path is not None and path.source != source:
        raise StepFailed(step, f"from_env: {req.env} is promoted from {path.source} "
                         f"(promotion.{req.env}.from), not from {source}", "InvalidInput",
                         bad_input=True)
    there: EnvironmentPolicy = await wf.step(
        f"read {source}'s policy", PlatformActivities.environment_policy,
        PolicyQuery(service=req.service, env=source))
    live: LiveRelease = await wf.step(step, DeploymentActivities.live_release, ReleaseTarget(
        env=source, namespace=there.namespace, service=req.service))
    if not live.healthy:
        raise StepFailed(step, f"nothing to promote from {source}: {live.detail}", "Refused",
                         refused=True)
    if req.image and (live.image, live.commit) != (req.image, req.commit):
        raise StepFailed(step, f"{source} no longer runs {req.image} ({req.commit[:12]}): it "
                         f"runs {live.image} ({live.commit[:12]})", "Refused", refused=True)
    soak = path.soak if path is not None else timedelta(0)
    if live.since is None or workflow.now() - live.since < soak:
        since = f"{live.since:%Y-%m-%d %H:%M:%S} UTC" if live.since else "an unknown time"
        raise StepFailed(step, f"{live.version} ({live.commit[:12]}) has been live in {source} "
                         f"since {since}, less than {req.env}'s soak of {soak}", "Refused",
                         refused=True)
    if path is not None and path.verify_with_prometheus and workflow.patched(AUTO_PROMOTION):
        verdict = await wf.step(f"verify {source}", PrometheusActivities.verify, VerifyRelease(
            env=source, namespace=there.namespace, service=req.service, workload=req.service))
        if verdict.verdict != "passed":
            raise StepFailed(f"verify {source}", f"{live.version} in {source}: {verdict.detail} "
                             f"(promotion.{req.env}.verify_with_prometheus)", "Refused", refused=True)
    return live


async def offer_onwards(wf: KeplerWorkflow, req: ReleaseRequest, policy: EnvironmentPolicy,
                        image: str, commit: str, version: str) -> None:
    """Offer the release now live in `req.env` to each automatic promotion from here. It is
    live already: an offer that cannot be made is a note, never a reason to roll back."""
    if not policy.auto_promote_to or not workflow.patched(AUTO_PROMOTION):
        return
    info = workflow.info()
    for target in policy.auto_promote_to:
        offer = AutoPromotionRequest(
            service=req.service, source=req.env, target=target, image=image, commit=commit,
            version=version, since=workflow.now(), release_id=f"{info.workflow_id}/{info.run_id}")
        try:
            await wf.step(f"offer to {target}", PromotionActivities.offer, offer)
        except StepFailed as e:
            wf.state.notes.append(f"automatic promotion to {target} not offered: {e.cause}")
