"""What a canary carries across continue-as-new passes through the worker's seal
(activities/authority.py): sealed before it is carried, checked before it is trusted. A
run that merely *says* it continues another (a run continued from a workflow of the same
name on another task queue) brings a state no worker sealed for this run chain, and is
refused before it changes anything."""

from __future__ import annotations

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.authority import AuthorityActivities
    from kepler.canary import CanaryState
    from workflows.base import SEALED_AUTHORITY, KeplerWorkflow, StepFailed


async def sealed(wf: KeplerWorkflow, state: CanaryState) -> CanaryState:
    patches.retired(SEALED_AUTHORITY)
    return await wf.step("seal the carried state", AuthorityActivities.seal, state)


async def check(wf: KeplerWorkflow, state: CanaryState) -> None:
    if workflow.info().continued_run_id is None:
        raise StepFailed("continue", "a canary's state comes only from its own continue-as-new",
                         "Unauthorized", bad_input=True)
    patches.retired(SEALED_AUTHORITY)
    await wf.step("check the carried state", AuthorityActivities.check_seal, state)
