"""The promotion steps of ReleaseVersion: what is live and healthy in the environment
promoted from, soaked long enough, taken exactly as it is; a path enforced on whatever
enters an environment that has one (a release by ref, a train's member, a canary: only
that, or a break-glass); and, after a release that went live, offering it to the
automatic promotions from here (kepler/promotion.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple, Sequence

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.platform import PlatformActivities
    from activities.prometheus import PrometheusActivities
    from activities.promotion import PromotionActivities
    from kepler.freeze import ActiveFreeze
    from kepler.models import Approval, CanaryRequest, ReleaseRequest
    from kepler.promotion import AutoPromotionRequest, LiveRelease, PromotionPath
    from kepler.payloads import EnvironmentPolicy, PolicyQuery, ReleaseTarget, VerifyRelease
    from workflows.base import SEALED_AUTHORITY, KeplerWorkflow, StepFailed
    from workflows.steps.image import ensure_image
    import workflows.steps.freeze as freeze

# Retired patch (deprecated in 0.2.0): promotions verify the source with Prometheus where
# the path says so, and a release that went live offers itself to the automatic promotions
# from its environment.
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
    return await soaked_release(wf, req.service, source, req.env, path,
                                pinned=(req.image, req.commit))


async def soaked_release(wf: KeplerWorkflow, service: str, source: str, env: str,
                         path: PromotionPath | None, label: str = "",
                         pinned: tuple[str, str] = ("", "")) -> LiveRelease:
    """What is live and healthy in `source` (the `pinned` digest and commit, if given),
    live there for the path's soak and (where the path says) passing its Prometheus check;
    otherwise a refusal (exit 3)."""
    step = f"{label}read {source}'s release"
    there: EnvironmentPolicy = await wf.step(
        f"{label}read {source}'s policy", PlatformActivities.environment_policy,
        PolicyQuery(service=service, env=source))
    live: LiveRelease = await wf.step(step, DeploymentActivities.live_release, ReleaseTarget(
        env=source, namespace=there.namespace, service=service))
    if not live.healthy:
        raise StepFailed(step, f"nothing to promote from {source}: {live.detail}", "Refused",
                         refused=True)
    image, commit = pinned
    if image and (live.image, live.commit) != (image, commit):
        raise StepFailed(step, f"{source} no longer runs {image} ({commit[:12]}): it "
                         f"runs {live.image} ({live.commit[:12]})", "Refused", refused=True)
    soak = path.soak if path is not None else timedelta(0)
    if live.since is None or workflow.now() - live.since < soak:
        since = f"{live.since:%Y-%m-%d %H:%M:%S} UTC" if live.since else "an unknown time"
        raise StepFailed(step, f"{live.version} ({live.commit[:12]}) has been live in {source} "
                         f"since {since}, less than {env}'s soak of {soak}", "Refused",
                         refused=True)
    if path is not None and path.verify_with_prometheus:
        patches.retired(AUTO_PROMOTION)
        verdict = await wf.step(f"{label}verify {source}", PrometheusActivities.verify, VerifyRelease(
            env=source, namespace=there.namespace, service=service, workload=service))
        if verdict.verdict != "passed":
            raise StepFailed(f"{label}verify {source}", f"{live.version} in {source}: "
                             f"{verdict.detail} (promotion.{env}.verify_with_prometheus)",
                             "Refused", refused=True)
    return live


class OnPath(NamedTuple):
    """What the path lets in: the source's digest of the commit asked for (`image`, so
    nothing is built), or nothing, through a break-glass gate (`break_glass`)."""
    image: str = ""
    break_glass: bool = False


async def enforce_path(wf: KeplerWorkflow, service: str, env: str, policy: EnvironmentPolicy,
                       commit: str, image: str = "", break_glass: bool = False,
                       label: str = "") -> OnPath:
    """Before anything is built or changed, a release by ref into an environment with a
    promotion path (or a train's member, or a canary): only the commit (and, pinned, the
    digest) live, healthy and soaked in the path's source, taken as its digest; anything
    else is refused (exit 3) unless `break_glass` asks for two approvers instead. Nothing
    to check without a path (a promotion `--from` checks its source itself)."""
    path = policy.promotion
    if path is None:
        return OnPath()
    patches.retired(SEALED_AUTHORITY)
    try:
        live = await soaked_release(wf, service, path.source, env, path, label)
        if live.commit == commit and image in ("", live.image):
            wf.skip(f"{label}build", f"{commit[:12]} runs in {path.source} as {live.image}")
            return OnPath(image=live.image)
        why = (f"{path.source} runs {live.version} ({live.commit[:12]}), not "
               f"{commit[:12]}" + (f" ({image})" if image else ""))
    except StepFailed as e:
        if not e.refused:
            raise
        why = e.cause
    if break_glass:
        assert wf.state is not None
        wf.state.notes.append(f"break-glass: off the promotion path: {why}")
        return OnPath(break_glass=True)
    raise StepFailed(f"{label}check promotion path", f"{env} takes only what {path.source} runs, "
                     f"live and healthy for {path.soak} (promotion.{env}.from): {why}. Promote "
                     f"that with --from {path.source}; --break-glass --reason TEXT asks two "
                     "approvers to let this through", "Refused", refused=True)


async def break_glass_gate(wf: KeplerWorkflow, policy: EnvironmentPolicy, reason: str, what: str,
                           digests: Sequence[str], commits: Sequence[str]) -> list[Approval]:
    """The gate of a change off the promotion path: a break-glass, as through a freeze."""
    assert policy.promotion is not None
    return await freeze.break_glass_gate(
        wf, policy, f"off the promotion path ({policy.env} takes only what "
        f"{policy.promotion.source} runs)", reason, what, digests, commits)


async def canary_image(wf: KeplerWorkflow, policy: EnvironmentPolicy, req: CanaryRequest,
                       commit: str, frozen: ActiveFreeze | None) -> str:
    """A canary's image: off a promotion path only through a freeze's break-glass gate."""
    on_path = await enforce_path(wf, req.service, req.env, policy, commit,
                                 break_glass=req.break_glass and frozen is not None)
    return on_path.image or await ensure_image(wf, policy, req.service, commit)


async def offer_onwards(wf: KeplerWorkflow, req: ReleaseRequest, policy: EnvironmentPolicy,
                        image: str, commit: str, version: str) -> None:
    """Offer the release now live in `req.env` to each automatic promotion from here. It is
    live already: an offer that cannot be made is a note, never a reason to roll back."""
    if not policy.auto_promote_to:
        return
    patches.retired(AUTO_PROMOTION)
    info = workflow.info()
    for target in policy.auto_promote_to:
        offer = AutoPromotionRequest(
            service=req.service, source=req.env, target=target, image=image, commit=commit,
            version=version, since=workflow.now(), release_id=f"{info.workflow_id}/{info.run_id}")
        try:
            await wf.step(f"offer to {target}", PromotionActivities.offer, offer)
        except StepFailed as e:
            wf.state.notes.append(f"automatic promotion to {target} not offered: {e.cause}")
