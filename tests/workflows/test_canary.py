"""Canary, every branch, on the time-skipping server with in-memory activities."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Callable

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

import workflows
from kepler.canary import CanaryControl
from kepler.models import CanaryRequest, MetricCheck, OperationStatus
from kepler.clients import operations as ops
from kepler import search_attributes as sa
from tests.fakes.canary import HEALTHY, CanaryWorld
from tests.fakes.world import COMMITTED_AT
from kepler.settings import load_platform
from starter.canary import control_signer
from tests.helpers import decide, keep_history, signed

OLD = "reg/demo/shop@sha256:" + "0" * 64
STABLE = (100, 0, False)


class Harness:
    def __init__(self, env: Any, world: CanaryWorld, queue: str) -> None:
        self.env, self.client, self.world, self.queue = env, env.client, world, queue

    async def start(self, **fields: Any) -> WorkflowHandle:
        req = CanaryRequest(**{"service": "shop", "env": "staging", "ref": "v2",
                               "requested_by": "carol", "steps": [10, 20, 50], **fields})
        return (await ops.start(self.client, signed(req, await self.env.get_current_time()),
                                self.queue)).handle

    async def status(self, handle: WorkflowHandle) -> OperationStatus:
        return await handle.query("status", result_type=OperationStatus)

    async def until(self, handle: WorkflowHandle, check: Callable[[OperationStatus], bool],
                    what: str, skip: timedelta | None = timedelta(seconds=20)) -> OperationStatus:
        """Let workflow time pass (skipping `skip` at a time) until `check` holds. While an
        activity runs the server cannot skip time: poll in real time then (skip=None)."""
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            status = await self.status(handle)
            if check(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never reached {what}; last {status.stage!r} {status.canary}")
            await (self.env.sleep(skip) if skip else asyncio.sleep(0.05))

    async def control(self, verb: str, by: str = "dave", env: str = "staging") -> str:
        """As `kepler VERB shop --env ENV --as BY` sends it: signed by BY for the running run."""
        return await ops.control(self.client, "shop", env, verb, CanaryControl(by=by),
                                 control_signer(load_platform(), by))


@pytest.fixture
async def harness(time_env) -> AsyncIterator[Harness]:
    world = CanaryWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        yield Harness(time_env, world, queue)


async def failure_of(handle: WorkflowHandle) -> str:
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    return str(e.value.cause)


def at_step(n: int) -> Callable[[OperationStatus], bool]:
    return lambda s: s.canary is not None and s.canary.step == n and s.stage.startswith("canary")


def assert_retreated(world: CanaryWorld) -> None:
    assert world.weight == STABLE
    assert world.canary["replicas"] == 0
    assert world.deployment["image"] == OLD


async def test_healthy_canary_steps_through_weights_and_promotes(harness: Harness) -> None:
    handle = await harness.start()
    report = await handle.result()
    w = harness.world
    assert report.outcome == "succeeded" and report.image.startswith("reg/demo/shop@sha256:")
    assert w.route_log == [(90, 10, True), (80, 20, True), (50, 50, True), STABLE]
    assert w.deployment["image"] == report.image and w.deployment["config"]  # image and config
    assert w.canary == {"exists": True, "image": report.image, "replicas": 0}
    assert w.analyses == 3 and report.failed_checks == 0
    assert [c.last_result for c in report.checks] == ["passed", "passed"]
    status = await harness.status(handle)
    assert status.outcome == "succeeded" and status.canary.weight == 0 and status.canary.step == 3
    assert any(n.event == "promoted" for n in w.notes)
    assert w.calls.index("wait_rollout canary") < w.calls.index("set_routes")


async def test_error_rate_canary_rolls_back_at_the_failure_limit(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-success-rate": 80.0}
    handle = await harness.start(failure_limit=3)
    message = await failure_of(handle)
    assert "failure limit 3 reached at 10%" in message
    assert "request-success-rate 80.00 < 99" in message and "failed 3x" in message
    assert "route 100% to stable" in message and "scale shop-canary to 0" in message
    assert_retreated(harness.world)
    assert (80, 20, True) not in harness.world.route_log  # a failing weight never advances
    status = await harness.status(handle)
    assert status.outcome == "rolled_back" and status.canary.failed_checks == 3
    rate = status.canary.checks[0]
    assert (rate.name, rate.last_value, rate.failures, rate.threshold) == (
        "request-success-rate", 80.0, 3, ">= 99")


async def test_latency_canary_rolls_back(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-duration": 800.0}
    message = await failure_of(await harness.start(failure_limit=2))
    assert "request-duration 800.00 > 500" in message
    assert_retreated(harness.world)


async def test_a_single_failed_round_holds_the_weight_then_recovers(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-duration": 900.0 if n == 1 else 40.0}
    report = await (await harness.start()).result()
    assert report.outcome == "succeeded" and report.failed_checks == 1
    assert harness.world.analyses == 4


async def test_custom_metric_thresholds(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "queue-depth": 12.0}
    metric = MetricCheck(name="queue-depth", query="max(queue{ns='$namespace'})", min=0, max=10)
    message = await failure_of(await harness.start(metrics=[metric], failure_limit=1))
    assert "queue-depth 12.00 > 10" in message


async def test_no_data_fails_by_default(harness: Harness) -> None:
    harness.world.values = lambda n: {}
    message = await failure_of(await harness.start(failure_limit=2))
    assert "request-success-rate: no data" in message
    assert_retreated(harness.world)


async def test_no_data_skip_passes_the_round(harness: Harness) -> None:
    harness.world.values = lambda n: {"request-success-rate": 100.0}
    report = await (await harness.start(no_data="skip")).result()
    assert report.outcome == "succeeded"
    assert [c.last_result for c in report.checks] == ["passed", "skipped"]


async def test_no_data_halt_pauses_until_a_human_decides(harness: Harness) -> None:
    harness.world.values = lambda n: {} if n == 0 else dict(HEALTHY)
    handle = await harness.start(no_data="halt")
    status = await harness.until(handle, lambda s: s.canary and s.canary.paused, "halted")
    assert status.canary.paused_by == "the no-data policy" and status.canary.failed_checks == 0
    assert "resume, promote or abort" in status.canary.waiting_on
    await harness.env.sleep(timedelta(minutes=5))
    status = await harness.status(handle)
    assert status.canary.weight == 10 and status.canary.rounds >= 5  # analysing, not advancing
    assert await harness.control("resume") == "resumed at 10%"
    assert (await handle.result()).outcome == "succeeded"


async def test_pause_holds_the_weight_and_resume_goes_on(harness: Harness) -> None:
    handle = await harness.start()
    await harness.until(handle, at_step(2), "step 2")
    assert await harness.control("pause") == "paused at 20%; analysis continues"
    with pytest.raises(ops.Refused, match="already paused by dave"):
        await harness.control("pause")
    await harness.env.sleep(timedelta(minutes=10))
    status = await harness.status(handle)
    assert status.stage == "paused" and status.canary.weight == 20 and status.canary.paused
    assert status.canary.rounds >= 10
    await harness.control("resume")
    report = await handle.result()
    assert report.outcome == "succeeded" and (50, 50, True) in harness.world.route_log
    await keep_history(harness.client, "canary-signed-controls", "shop@staging")


async def test_promote_skips_the_remaining_steps(harness: Harness) -> None:
    handle = await harness.start()
    await harness.until(handle, at_step(1), "step 1")
    assert (await harness.control("promote")).startswith("promoting")
    report = await handle.result()
    assert report.outcome == "succeeded"
    assert harness.world.route_log == [(90, 10, True), STABLE]
    assert harness.world.deployment["image"] == report.image


async def test_promote_does_not_skip_the_promotion_approval(harness: Harness) -> None:
    req = dict(env="prod", approve_promotion=True)
    handle = await harness.start(**req)
    await harness.until(handle, lambda s: s.stage == "awaiting approval", "first approval")
    with pytest.raises(ops.Refused, match="four eyes"):
        await decide(harness.client, "shop", "prod", "carol")
    await decide(harness.client, "shop", "prod", "alice")
    await harness.until(handle, at_step(1), "step 1")
    with pytest.raises(ops.Refused, match="dave may not promote the canary in prod"):
        await harness.control("promote", env="prod")  # promote skips the analysis: approvers only
    with pytest.raises(ops.Refused, match="carol may not promote"):
        await harness.control("promote", by="carol", env="prod")  # nor its own requester
    answer = await harness.control("promote", by="bob", env="prod")
    assert "approval still required" in answer
    status = await harness.until(handle, lambda s: s.stage == "awaiting approval", "approval")
    assert status.canary.waiting_on == "approval before promotion"
    assert harness.world.deployment["image"] == OLD
    await decide(harness.client, "shop", "prod", "bob")
    assert (await handle.result()).outcome == "succeeded"


@pytest.mark.parametrize("step", [1, 2, 3])
async def test_abort_at_each_step_returns_all_traffic_to_stable(harness: Harness, step: int) -> None:
    handle = await harness.start()
    await harness.until(handle, at_step(step), f"step {step}")
    assert (await harness.control("abort")).startswith("aborting")
    message = await failure_of(handle)
    assert f"aborted by dave at {[10, 20, 50][step - 1]}%" in message
    assert_retreated(harness.world)
    assert (await harness.status(handle)).outcome == "aborted"
    with pytest.raises(ops.Refused, match="no canary is running"):
        await harness.control("resume")


async def test_abort_while_the_canary_deploys(harness: Harness) -> None:
    harness.world.canary_rollout_hangs = True
    handle = await harness.start()
    await harness.until(handle, lambda s: s.stage == "wait for rollout", "canary rollout",
                         skip=None)
    with pytest.raises(ops.Refused, match="not analysing yet"):
        await harness.control("pause")
    await harness.control("abort")
    assert "aborted by dave" in await failure_of(handle)
    harness.world.canary_rollout_hangs = False  # lets the abandoned fake rollout end
    assert_retreated(harness.world)


async def test_failure_during_promotion_restores_the_old_primary_and_routes(harness: Harness) -> None:
    harness.world.primary_rollout_fails = True
    before = dict(harness.world.deployment)
    handle = await harness.start()
    message = await failure_of(handle)
    assert "step 'wait for rollout' failed" in message and "CrashLoopBackOff" in message
    assert f"restore {OLD} and its config" in message
    assert harness.world.deployment == before
    assert_retreated(harness.world)
    # everything was put back, so the truthful outcome is rolled_back (one rule for all
    # operations; the canary used to say failed here)
    assert (await harness.status(handle)).outcome == "rolled_back"


async def test_query_errors_count_only_after_their_own_limit(harness: Harness) -> None:
    harness.world.query_fails = True
    handle = await harness.start(query_error_limit=2, failure_limit=2)
    message = await failure_of(handle)
    assert "queries failed 3 rounds in a row" in message and "Prometheus unreachable" in message
    status = await harness.status(handle)
    assert status.canary.rounds == 3 and status.outcome == "rolled_back"


async def test_cancel_retreats_then_ends_cancelled(harness: Harness) -> None:
    handle = await harness.start()
    await harness.until(handle, at_step(2), "step 2")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert isinstance(e.value.cause, CancelledError)
    assert_retreated(harness.world)


async def test_a_failed_version_can_simply_be_retried(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-success-rate": 50.0}
    await failure_of(await harness.start(failure_limit=1))
    assert harness.world.canary["replicas"] == 0
    harness.world.values = lambda n: dict(HEALTHY)
    report = await (await harness.start()).result()  # same version, no annotation trick
    assert report.outcome == "succeeded"
    assert harness.world.calls.count("apply_release canary") == 2


async def test_continue_as_new_keeps_state_and_bounds_each_runs_history(harness: Harness) -> None:
    harness.world.values = lambda n: {**HEALTHY, "request-success-rate": 90.0 if n == 2 else 100.0}
    handle = await harness.start(steps=None, step_weight=5, max_weight=100, rounds_per_run=5)
    report = await handle.result()
    assert report.outcome == "succeeded" and report.failed_checks == 1
    await keep_history(harness.client, "canary-sealed-continue-as-new", "shop@staging")
    assert report.runs >= 4 and report.checks[0].failures == 1
    assert harness.world.route_log[:3] == [(95, 5, True), (90, 10, True), (85, 15, True)]
    assert harness.world.route_log[-2:] == [(0, 100, True), STABLE]
    # Walk the chain of runs: each run's history stays small.
    run_id, sizes = handle.first_execution_run_id or handle.result_run_id or "", []
    while run_id:
        history = await harness.client.get_workflow_handle("shop@staging", run_id=run_id).fetch_history()
        sizes.append(len(history.events))
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW else "")
    assert len(sizes) == report.runs
    # the commit's time crossed every continue-as-new to the run that promoted (kepler metrics)
    attrs = (await handle.describe()).typed_search_attributes
    assert (attrs.get(sa.OUTCOME), attrs.get(sa.COMMIT_TIME)) == ("succeeded", COMMITTED_AT)
    await keep_history(harness.client, "canary-continued-as-new", "shop@staging",
                       handle.first_execution_run_id)
    await keep_history(harness.client, "canary-promoted-after-continue-as-new", "shop@staging")
    assert max(sizes) < 200, sizes
    assert sum(sizes) > max(sizes) * 3  # one run alone would have grown past the bound


async def test_the_whole_canary_deadline_is_enforced(harness: Harness) -> None:
    handle = await harness.start(max_duration=timedelta(minutes=5))
    await harness.until(handle, at_step(1), "step 1")
    await harness.control("pause")  # a canary left paused still ends at its deadline
    message = await failure_of(handle)
    assert "deadline (0:05:00) passed at 10%" in message
    assert_retreated(harness.world)
    assert (await harness.status(handle)).outcome == "expired"


async def test_an_abort_takes_effect_at_once_while_waiting_for_approval(harness: Harness) -> None:
    """An abort while the canary waits for prod's approval ends it at once, before any
    canary pod or traffic (it used to be refused: 'reject it or kepler cancel it')."""
    handle = await harness.start(env="prod")
    await harness.until(handle, lambda s: s.stage == "awaiting approval", "approval")
    assert (await harness.control("abort", env="prod")).startswith("aborting")
    message = await failure_of(handle)
    assert "aborted by dave at 0%" in message
    status = await harness.status(handle)
    assert status.outcome == "aborted" and status.pending_approval is None
    assert "apply_release canary" not in harness.world.calls
    assert not harness.world.route_log  # no traffic ever moved


async def test_an_abort_while_waiting_to_promote_retreats_at_once(harness: Harness) -> None:
    handle = await harness.start(env="prod", approve_promotion=True, steps=[50])
    await harness.until(handle, lambda s: s.stage == "awaiting approval", "first approval")
    await decide(harness.client, "shop", "prod", "alice")
    await harness.until(handle, lambda s: s.stage == "awaiting approval" and s.canary.step == 1,
                        "promotion approval")
    await harness.control("abort", env="prod")
    assert "aborted by dave at 50%" in await failure_of(handle)
    assert (await harness.status(handle)).outcome == "aborted"
    assert_retreated(harness.world)
    assert harness.world.deployment["image"] == OLD  # never promoted
