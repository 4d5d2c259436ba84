"""The service page's pure reads: the soak left before the next environment (as the apply's
soaked_in counts it) and how durations read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kepler.payloads import ReleaseRecord
from kepler.promotion import soak_left, soaked_in
from starter.console.service_reads import span

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
