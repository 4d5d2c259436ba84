"""Continuing as new onto the current worker version."""

from __future__ import annotations

from typing import Any, NoReturn

from temporalio import workflow


def continue_as_new_on_current_version(*args: Any) -> NoReturn:
    """workflow.continue_as_new, the next run starting on the Worker Deployment's current
    version (then pinned to it, like every Kepler run: worker.deployment_config). A long-lived
    operation — a canary's rounds, a promotion that found a newer offer — so moves to upgraded
    workers at its next run instead of holding the old version's workers for its whole life.
    What carries over is data (the request, the sealed carried state), which every version
    reads; on an unversioned worker this is a plain continue-as-new."""
    workflow.continue_as_new(args=list(args), initial_versioning_behavior=(
        workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE))
