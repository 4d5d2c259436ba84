"""The platform's word on an operation: the environment's policy (namespace, approval,
bounds, rollout timeout, builder), read through an activity so kepler.yaml changes
reach running workers without a workflow ever reading a file."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from kepler.steps import EnvironmentPolicy, PolicyQuery
    from workflows.base import KeplerWorkflow


async def read_policy(wf: KeplerWorkflow, service: str, env: str,
                      step: str = "read policy") -> EnvironmentPolicy:
    return await wf.step(step, PlatformActivities.environment_policy,
                         PolicyQuery(service=service, env=env))
