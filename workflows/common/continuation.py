"""Continuing as new onto the current worker version."""

from __future__ import annotations

from typing import Any, NoReturn

from temporalio import workflow


def continue_as_new_on_current_version(*args: Any) -> NoReturn:
    """workflow.continue_as_new, the next run starting on the Worker Deployment's current
    version (then pinned to it, like every Kepler run: worker.deployment_config). A promotion
    coordinator that found a newer offer so moves to upgraded workers instead of holding the
    old version's for its whole life: what it carries is a request, which every version reads.
    Not for a canary: the state it carries is sealed over this version's dump of it, which a
    newer model may not reproduce (workflows/canary.py). On an unversioned worker this is a
    plain continue-as-new."""
    workflow.continue_as_new(args=list(args), initial_versioning_behavior=(
        workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE))
