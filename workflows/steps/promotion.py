"""The promotion step of ReleaseVersion: what is live and healthy in the environment
promoted from, soaked long enough, taken exactly as it is (kepler/promotion.py)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.platform import PlatformActivities
    from kepler.models import ReleaseRequest
    from kepler.promotion import LiveRelease
    from kepler.steps import EnvironmentPolicy, PolicyQuery, ReleaseTarget
    from workflows.base import KeplerWorkflow, StepFailed


async def source_release(wf: KeplerWorkflow, req: ReleaseRequest,
                         policy: EnvironmentPolicy) -> LiveRelease:
    """The release to promote into `req.env`, or a refusal (exit 3) before any change:
    nothing healthy there, or live there for less than the path's soak."""
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
    soak = path.soak if path is not None else timedelta(0)
    if live.since is None or workflow.now() - live.since < soak:
        since = f"{live.since:%Y-%m-%d %H:%M:%S} UTC" if live.since else "an unknown time"
        raise StepFailed(step, f"{live.version} ({live.commit[:12]}) has been live in {source} "
                         f"since {since}, less than {req.env}'s soak of {soak}", "Refused",
                         refused=True)
    return live
