"""Timeouts and retries of workflow steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class StepOptions:
    # Short, so a call lost with a crashed worker is retried elsewhere within seconds;
    # each HTTP call inside has its own 15 s timeout.
    start_to_close: timedelta = timedelta(seconds=30)
    heartbeat: timedelta | None = None
    attempts: int = 0  # 0: until the start-to-close/schedule-to-close budget runs out
    schedule_to_close: timedelta | None = timedelta(minutes=30)
    non_retryable: tuple[str, ...] = ("InvalidInput", "NotFound", "BuildFailed", "RolloutFailed",
                                      "Conflict", "Unauthorized")


QUICK = StepOptions()
LONG_WAIT = StepOptions(start_to_close=timedelta(hours=1), heartbeat=timedelta(seconds=10),
                        schedule_to_close=timedelta(hours=2))
NOTIFY = StepOptions(start_to_close=timedelta(seconds=30), attempts=5,
                     schedule_to_close=timedelta(minutes=5), non_retryable=())
UNDO = StepOptions(schedule_to_close=timedelta(hours=1))  # an undo keeps trying for an hour

# Reads a workflow acts on at once: no change to the world, no heartbeat, seconds at most.
# They run as local activities (workflows/base.py, patch LOCAL_READS): in the worker that runs
# the workflow, through the same authority checks, recorded as one marker event instead of
# three events and a round trip through the server each (issue 31: bench/RESULTS.md).
LOCAL_READS = frozenset({
    "platform.environment_policy", "platform.environments", "platform.preview_settings",
    "platform.decommission_plan", "platform.policy_and_freezes", "temporal.active_freeze",
    "gitlab.resolve_ref", "gitlab.read_spec", "gitlab.merge_request", "registry.find_image",
    "kubernetes.snapshot", "kubernetes.revision_history", "kubernetes.live_release",
    "cronjob.snapshot",
})

# A read retried in the worker for backoffs up to this; a longer one waits on a workflow
# timer (an outage of minutes holds no workflow task open, and is durable)
LOCAL_RETRY_THRESHOLD = timedelta(seconds=5)

RETRY = dict(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
             maximum_interval=timedelta(seconds=30))
