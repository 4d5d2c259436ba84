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

RETRY = dict(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
             maximum_interval=timedelta(seconds=30))
