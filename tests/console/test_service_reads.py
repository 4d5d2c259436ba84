"""The service page's own reads: the soak left before the next environment (as the apply's
soaked_in counts it), how durations read, and a slow cluster's read that outlives a page's
deadline is awaited again, not started twice."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pytest

from kepler.payloads import ReleaseRecord
from kepler.promotion import soak_left, soaked_in
from starter.console.service_reads import SectionFailed, bounded, in_thread, span

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SOAK = timedelta(hours=1)


def record(image: str, minutes_ago: int) -> ReleaseRecord:
    return ReleaseRecord(image=image, at=NOW - timedelta(minutes=minutes_ago))


def test_the_soak_left_counts_from_when_the_live_release_was_recorded() -> None:
    history = [record("b", 20), record("a", 300)]
    assert soak_left(history, "b", SOAK, NOW) == timedelta(minutes=40)
    assert soak_left(history, "b", timedelta(0), NOW) == timedelta(0)
    assert soak_left([record("b", 61)], "b", SOAK, NOW) == timedelta(0)


def test_a_release_that_soaked_before_is_soaked_and_one_never_recorded_counts_no_soak() -> None:
    history = [record("b", 20), record("a", 300)]  # a was live 280 minutes before b replaced it
    assert soaked_in(history, "a", SOAK, NOW) and soak_left(history, "a", SOAK, NOW) == timedelta(0)
    assert soak_left(history, "c", SOAK, NOW) is None
    assert soak_left([], "c", SOAK, NOW) is None


def test_durations_read_in_their_two_largest_units() -> None:
    assert [span(timedelta(seconds=s)) for s in (0, 8, 67, 3600, 3660 * 2, 90000, -5)] == \
        ["0s", "8s", "1m 7s", "1h", "2h 2m", "1d 1h", "0s"]


async def test_a_read_still_going_is_awaited_again_not_started_twice() -> None:
    release, calls = threading.Event(), []

    def slow_read(what: str) -> str:
        calls.append(what)
        release.wait(10)
        return what

    key = ("test", "slow")
    with pytest.raises(SectionFailed, match="the cluster: no answer within 0s"):
        await bounded("the cluster", in_thread(key, slow_read, "first"), deadline=0.05)
    second = asyncio.ensure_future(in_thread(key, slow_read, "second"))
    await asyncio.sleep(0)  # it starts, and finds the first read going (blocked until released)
    release.set()
    assert await second == "first" and calls == ["first"]  # the page after got the first read
    assert await in_thread(key, slow_read, "third") == "third"  # once done, a read is new
