"""What the canary page makes of a canary's status, without a server: the controls its
validators would take in each state, and its weight over time from the routing steps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kepler.models import CanaryProgress, Operation, OperationStatus, PendingApproval, StepRecord
from starter.console.views.canary import state_and_controls, weight_points

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)


def status(stage: str, outcome: str = "running", paused: bool = False, waiting_on: str = "",
           run: int = 1, steps: list[StepRecord] | None = None,
           pending: bool = False) -> OperationStatus:
    progress = CanaryProgress(weights=[20, 50], interval=timedelta(seconds=10), failure_limit=3,
                              paused=paused, paused_by="carol" if paused else "",
                              waiting_on=waiting_on, run=run)
    return OperationStatus(
        operation=Operation.CANARY, service="s", env="staging", requested_by="carol", stage=stage,
        outcome=outcome, canary=progress, steps=steps or [],
        pending_approval=PendingApproval(env="staging", approvers=["alice"], requested_by="carol",
                                         deadline=T0) if pending else None)


@pytest.mark.parametrize("given, state, controls", [
    (status("canary 20%"), "analysing", ["pause", "promote", "abort"]),
    (status("canary 20%", paused=True), "paused by carol", ["resume", "promote", "abort"]),
    (status("paused", paused=True), "paused by carol", ["resume", "promote", "abort"]),
    (status("awaiting approval", pending=True), "awaiting approval", ["abort"]),
    (status("promoting"), "promoting", ["abort"]),
    (status("route 100% to stable", waiting_on="traffic back to stable"),
     "putting traffic back to stable", []),
    (status("done", outcome="rolled_back"), "rolled_back", []),
    (status("read policy").model_copy(update={"canary": None}), "preparing (read policy)", ["abort"]),
])
def test_only_the_controls_the_canary_takes_now_are_offered(
        given: OperationStatus, state: str, controls: list[str]) -> None:
    assert state_and_controls(given) == (state, controls)


def step(name: str, minute: int, outcome: str = "done") -> StepRecord:
    at = T0 + timedelta(minutes=minute)
    return StepRecord(name=name, started_at=at, finished_at=at + timedelta(seconds=1), outcome=outcome)


def test_the_weight_steps_up_with_each_routing_step_and_falls_to_zero_on_the_way_back() -> None:
    steps = [step("read policy", 0), step("route 20% to canary", 1), step("route 50% to canary", 3),
             step("route 80% to canary", 4, "failed"), step("route 100% to stable", 5)]
    assert weight_points(status("done", "rolled_back", steps=steps)) == [
        (T0, 0.0), (T0 + timedelta(minutes=1, seconds=1), 20.0),
        (T0 + timedelta(minutes=3, seconds=1), 50.0), (T0 + timedelta(minutes=5, seconds=1), 0.0)]
    # a continued run carries its last steps only: no made-up 0 at their start
    assert weight_points(status("canary 50%", run=2, steps=steps[2:3])) == [
        (T0 + timedelta(minutes=3, seconds=1), 50.0)]
