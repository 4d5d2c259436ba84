"""The baseline: a bare Temporal workflow running N no-op activities one after the other,
with the retry policy and timeouts Kepler's steps use (workflows/common/options.py QUICK + RETRY).
No search attributes, no status, no saga: what Temporal itself costs.

The release is compared with BARE_ACTIVITIES of them, the release path's length on
2026-12-01, whatever the release runs now (issue 31): a new step has to pay for itself."""

from __future__ import annotations

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.common.options import QUICK, RETRY


BARE_ACTIVITIES = 8


@activity.defn(name="bench.noop")
def noop(step: int) -> int:
    """Synchronous, like Kepler's activities: it runs in the same thread pool."""
    return step


@workflow.defn(name="BenchBare")
class BenchBare:
    @workflow.run
    async def run(self, activities: int) -> int:
        for step in range(activities):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=QUICK.start_to_close,
                schedule_to_close_timeout=QUICK.schedule_to_close,
                retry_policy=RetryPolicy(maximum_attempts=QUICK.attempts,
                                         non_retryable_error_types=list(QUICK.non_retryable), **RETRY))
        return activities
