"""A canary's mirror stage, every branch, on the time-skipping server: live traffic stays on
stable while a copy of it reaches the canary, whose own metrics decide whether live traffic
ever moves."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError

from kepler.models import CanaryRequest
from tests.fakes.canary import HEALTHY
from tests.helpers import keep_history
from tests.workflows.test_canary import STABLE, Harness, assert_retreated, failure_of, harness  # noqa: F401

MIRROR = {"percent": 50, "duration": "3m"}


async def test_the_mirror_stage_passes_then_live_traffic_moves(harness: Harness) -> None:
    handle = await harness.start(mirror=MIRROR)
    status = await harness.until(handle, lambda s: s.stage == "mirror 50%", "the mirror stage")
    assert "of the 50% mirror" in status.canary.waiting_on and status.canary.weight == 0
    report = await handle.result()
    w = harness.world
    assert report.outcome == "succeeded"
    # first the copy (live: 100 % stable), then the weights, each without a mirror
    assert w.route_log == [(100, 0, True), (90, 10, True), (80, 20, True), (50, 50, True), STABLE]
    assert w.mirror_log == [50, 0, 0, 0, 0]
    assert w.analyses >= 3 + 3  # the stage lasted its 3 minutes of 1-minute rounds, then each weight
    assert any("a copy of 50% of the traffic for 0:03:00" in n.text for n in w.notes)
    await keep_history(harness.client, "canary-mirror-stage", "shop@staging")


async def test_a_failing_mirror_stage_rolls_back_before_any_live_traffic(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-success-rate": 80.0}
    message = await failure_of(await harness.start(mirror=MIRROR, failure_limit=2))
    assert "failure limit 2 reached at the 50% mirror" in message
    assert_retreated(harness.world)
    assert all(canary == 0 for _, canary, _ in harness.world.route_log)  # no live request moved
    assert harness.world.mirror_log == [50, 0]  # the copy, then stable alone


async def test_an_abort_during_the_mirror_stage_stops_the_copies(harness: Harness) -> None:
    handle = await harness.start(mirror=MIRROR)
    await harness.until(handle, lambda s: s.stage == "mirror 50%", "the mirror stage")
    assert (await harness.control("abort")).startswith("aborting")
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert_retreated(harness.world)
    assert harness.world.mirror_log[-1] == 0


async def test_no_mirror_for_a_service_whose_requests_are_not_idempotent(harness: Harness) -> None:
    harness.world.idempotent = False
    message = await failure_of(await harness.start(mirror=MIRROR))
    assert "idempotent: false" in message and "no mirror stage" in message
    assert harness.world.route_log == [] and not harness.world.canary["exists"]  # nothing changed


def test_the_mirror_stage_is_bounded() -> None:
    base = {"service": "shop", "env": "staging", "ref": "v2", "requested_by": "carol"}
    for mirror, error in (({"percent": 0, "duration": "1m"}, "greater than or equal to 1"),
                          ({"percent": 50, "duration": "5s"}, "between 10s and 24h"),
                          ({"percent": 50, "duration": "25h"}, "between 10s and 24h"),
                          ({"percent": 50, "duration": "30s"}, "at least one interval"),
                          ({"percent": 50, "duration": "3h"}, "at most rounds_per_run intervals")):
        with pytest.raises(ValueError, match=error):
            CanaryRequest(**base, mirror=mirror)
    assert CanaryRequest(**base, mirror={"percent": 50, "duration": "1h"}).mirror.duration == timedelta(hours=1)
