"""Running a piece of a workflow until it ends or something stops it (a canary's abort)."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from temporalio import workflow

T = TypeVar("T")


class Stopped(Exception):
    """`stopped()` became true before the work ended; the work was cancelled."""


async def unless(work: Awaitable[T], stopped: Callable[[], bool]) -> T:
    """`work`'s result, or Stopped as soon as `stopped()` is true (in-flight steps are
    cancelled first, so what they registered can be undone). A cancellation of the caller
    cancels the work too."""
    task = asyncio.ensure_future(work)
    try:
        await workflow.wait_condition(lambda: task.done() or stopped())
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        await workflow.wait([task])
        if not task.cancelled():
            task.exception()  # it ended itself meanwhile (e.g. raising the same stop): seen
        raise Stopped()
    return await task
