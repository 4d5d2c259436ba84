"""Figure 3: history sizes of a canary (the release's event count comes from the overhead
run, bench/overhead.py). The figures run on the time-skipping test server with the
in-memory activities of tests/fakes/canary.py (a real 7-day canary would take 7 days):
events per weight step, and a canary paused for its whole 7-day deadline at a 1-minute
interval (10,080 analysis rounds), walked run by run through its continue-as-new chain."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import workflows
from bench.common import BIN, Figure, history
from kepler.canary import CanaryControl
from kepler.identity import SignedStatement, Statement
from kepler.models import CanaryRequest
from kepler.settings import load_platform
from kepler.clients.temporal import data_converter
from kepler.clients import operations as ops
from kepler.contracts import STATUS
from tests.conftest import register_search_attributes
from starter.canary import control_signer
from tests.fakes.canary import CanaryWorld

RUN_TARGET = 10_000


async def run_sizes(client: Client, handle: WorkflowHandle) -> list[int]:
    """Event count of each run in the chain, following continue-as-new."""
    run_id, sizes = handle.first_execution_run_id or handle.result_run_id or "", []
    while run_id:
        events = await history(client, handle.id, run_id)
        sizes.append(len(events))
        last = events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
                  else "")
    return sizes


async def _canary(env: WorkflowEnvironment, queue: str, service: str, **fields: Any) -> WorkflowHandle:
    req = CanaryRequest(**{"service": service, "env": "staging", "ref": "v2",
                           "requested_by": "carol", **fields})
    return (await ops.start(env.client, req, queue)).handle


async def _seven_days(env: WorkflowEnvironment, queue: str) -> tuple[list[int], float]:
    handle = await _canary(env, queue, "week", steps=[10, 20, 50], interval=timedelta(minutes=1),
                           max_duration=timedelta(days=7))
    t0 = time.perf_counter()
    while True:  # wait for the first weight, then pause: analysis goes on for 7 days
        status = await ops.query(handle, STATUS)
        if status.canary and status.canary.step == 1 and status.stage.startswith("canary"):
            break
        await env.sleep(timedelta(seconds=20))
    alice = control_signer(load_platform(), "alice")
    at = await env.get_current_time()  # the skipping server's clock, ahead of the wall's

    async def signed_now(statement: Statement) -> SignedStatement:
        return await alice(statement.model_copy(update={"issued_at": at}))
    await ops.control(env.client, "week", "staging", "pause", CanaryControl(by="alice"),
                      signed_now)  # a signed decision
    try:
        await asyncio.wait_for(handle.result(), 600)
        raise AssertionError("a paused canary must end at its deadline")
    except WorkflowFailureError as e:
        assert "deadline" in str(e.cause), e.cause
    return await run_sizes(env.client, handle), time.perf_counter() - t0


async def measure() -> list[Figure]:
    figures = []
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=data_converter())
    try:
        await register_search_attributes(env.client)
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        async with Worker(env.client, task_queue=queue, workflows=workflows.ALL,
                          activities=CanaryWorld().activities()):
            # One at a time: two result() calls at once confuse the server's auto-skipping.
            for service, steps in (("one", [50]), ("five", [10, 20, 30, 40, 50])):
                handle = await _canary(env, queue, service, steps=steps)
                await asyncio.wait_for(handle.result(), 120)
            per_step = (len(await history(env.client, "five@staging"))
                        - len(await history(env.client, "one@staging"))) / 4
            sizes, seconds = await _seven_days(env, queue)
    finally:
        await env.shutdown()
    figures.append(Figure("history: canary events per weight step", per_step, "events", "info",
                          None, note="time-skipping server, in-memory activities"))
    figures.append(Figure("history: 7-day canary, largest run", max(sizes), "events",
                          f"<= {RUN_TARGET:,}", max(sizes) <= RUN_TARGET, sum(sizes),
                          f"paused 7 days at 1 min: {len(sizes)} runs (continue-as-new), "
                          f"{sum(sizes):,} events in all (baseline column: one run would hold "
                          f"them all); simulated in {seconds:.0f} s on the time-skipping server"))
    return figures
