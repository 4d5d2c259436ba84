"""The platform's word on an operation: the environment's policy (namespace, approval,
bounds, rollout timeout, builder), read through an activity so kepler.yaml changes
reach running workers without a workflow ever reading a file."""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from activities.temporal import TemporalActivities
    from kepler.freeze import ActiveFreeze
    from kepler.models import CanaryRequest
    from kepler.spec import Resources
    from kepler.scale import bounds_problems
    from kepler.payloads import EnvironmentPolicy, PolicyNow, PolicyQuery
    from workflows.base import SEALED_AUTHORITY, KeplerWorkflow, StepFailed


async def read_policy(wf: KeplerWorkflow, service: str, env: str,
                      step: str = "read policy") -> EnvironmentPolicy:
    policy: EnvironmentPolicy = await wf.step(step, PlatformActivities.environment_policy,
                                              PolicyQuery(service=service, env=env))
    await _identify(wf, policy)
    return policy


async def read_policy_and_freezes(wf: KeplerWorkflow, service: str,
                                  env: str) -> tuple[EnvironmentPolicy, list[ActiveFreeze]]:
    """read_policy, and the ad-hoc freezes in force on `env` now, in one read: for the
    first freeze check only (freeze.check's `adhoc`)."""
    now: PolicyNow = await wf.step("read policy", TemporalActivities.policy_and_freezes,
                                   PolicyQuery(service=service, env=env))
    await _identify(wf, now.policy)
    return now.policy, now.adhoc_freezes


async def _identify(wf: KeplerWorkflow, policy: EnvironmentPolicy) -> None:
    """Who asked, verified against the policy's signers; the request claimed (single use)."""
    gated = wf.needs_approval(policy)
    patches.retired(SEALED_AUTHORITY)
    wf.identify(policy.signers, gated=gated)
    await wf.claim_request()


def check_bounds(wf: KeplerWorkflow, policy: EnvironmentPolicy, replicas: int | None,
                 resources: Resources | None, source: str = "service spec") -> None:
    """Refuse, before any change, what goes over the environment's bounds (as `kepler scale`
    always did): InvalidInput naming the field, the value and the bound."""
    problems = bounds_problems(policy.bounds, replicas, resources)
    if problems:
        raise StepFailed("check bounds", "; ".join(f"{source}: {p}" for p in problems),
                         "InvalidInput", bad_input=True)


def check_canary_policy(policy: EnvironmentPolicy, req: CanaryRequest) -> None:
    """What the environment's approval policy rules out for a canary, before any change."""
    if req.approve_promotion and not policy.approval.approvers:
        raise StepFailed("read policy", f"approve_promotion needs approvers, and {req.env} "
                         "lists none in kepler.yaml", "InvalidInput")
    valid_for = policy.approval.valid_for
    if req.release is None and policy.approval.required and req.max_duration > valid_for:
        raise StepFailed("read policy", f"max_duration: {req.max_duration} is longer than "
                         f"{req.env}'s approval.valid_for of {valid_for}: the canary's approval "
                         "would expire before it ends", "InvalidInput", bad_input=True)
