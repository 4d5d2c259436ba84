"""Two `kepler worker` processes on Kepler's task queue of a real Temporal server: the one
running a release's rollout is killed (kill -9) and the other finishes it, every side effect
once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kepler.clients import operations as ops
from kepler.clients.temporal import connect
from kepler.models import CreateServiceRequest, ReleaseRequest
from kepler.spec import ServiceSpec
from sandbox.serve import Sandbox
from tests.helpers import sandbox_fixture
from tests.reliability.test_crash import Case, waiting_for_rollout
from tests.workers import wait_for

two_workers_box = sandbox_fixture("two-workers", build_seconds=1, seconds_per_replica=4)


async def test_a_worker_killed_mid_rollout_the_other_finishes_every_step_once(
        two_workers_box: Sandbox, temporal_cluster: Any, tmp_path: Path) -> None:
    client = await connect(temporal_cluster.address)
    case = Case(two_workers_box, client, tmp_path, temporal_cluster.address, "twin")
    first = await case.worker().start()
    second = None
    try:
        spec = ServiceSpec(name="twin", team="t", replicas=3)
        await (await case.run(CreateServiceRequest(spec=spec, requested_by="carol"))).handle.result()
        started = await case.run(ReleaseRequest(service="twin", env="staging", ref="main",
                                                requested_by="carol"))
        # the first worker alone took every task so far: the rollout wait (12 s) is its
        # activity, and it dies in it before the second worker exists
        await wait_for(lambda: waiting_for_rollout(case, started), 90, "the rollout wait")
        first.kill9()
        await first.proc.wait()
        second = await case.worker().start()
        report = await asyncio.wait_for(started.handle.result(), 180)
    finally:
        await first.stop()
        if second is not None:
            await second.stop()

    assert report.outcome == "succeeded"
    assert case.builds_queued() == 1, f"build triggered {case.builds_queued()} times"
    assert case.image_writes("@sha256:") == 1, "image written more than once"
    history = [e async for e in started.handle.fetch_history_events()]
    identities = {e.workflow_task_completed_event_attributes.identity for e in history
                  if e.HasField("workflow_task_completed_event_attributes")}
    assert len(identities) == 2, identities  # both workers ran the release's workflow tasks
