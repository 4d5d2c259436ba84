"""Upgrading Kepler in flight with worker versioning (Temporal Worker Deployments) on the real
Temporal server: version 1's workers (`kepler worker` with KEPLER_BUILD_ID=v1) start releases,
one of them waiting for prod's approval; version 2 comes up with a release runbook whose
histories version 1's runs could not replay, and is made current with the temporal CLI, as the
README says. New runs go to version 2; the waiting run, pinned, finishes on version 1 — no
patch needed."""

from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import Client

import workflows
from kepler.clients import operations as ops
from kepler.clients.temporal import connect
from kepler.models import CreateServiceRequest, ReleaseRequest
from kepler.settings import Secrets, load_platform
from kepler.spec import ServiceSpec
from sandbox.serve import Sandbox
from tests.helpers import decide, sandbox_fixture, signed
from tests.realtemporal.release_v2 import V2_TIMER, ReleaseVersionV2
from tests.reliability.test_crash import Case
from tests.workers import BIN, wait_for
from worker import build_worker, workflow_type

versions_box = sandbox_fixture("versioning", build_seconds=0.5, seconds_per_replica=0.5)


def set_current(address: str, build_id: str) -> bool:
    """What an operator runs once a version's workers are up (README: Upgrading Kepler)."""
    done = subprocess.run([str(BIN / "temporal"), "worker", "deployment", "set-current-version",
                           "--address", address, "--deployment-name", "kepler", "--build-id", build_id,
                           "--yes"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0


async def ran_on(client: Client, run: ops.Started) -> tuple[str, int]:
    """The version a run is pinned to, as Temporal records it: (build id, behaviour)."""
    handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


async def v2_timers(client: Client, run: ops.Started) -> int:
    """Timers of version 2's extra step in a run's history."""
    handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
    return len([e async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
                and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() == V2_TIMER])


async def test_v1_runs_finish_on_v1_while_new_runs_go_to_v2(
        versions_box: Sandbox, temporal_cluster: Any, tmp_path: Path) -> None:
    address = temporal_cluster.address
    client: Client = await connect(address)
    case = Case(versions_box, client, tmp_path, address, "atlas")
    v1 = case.worker()
    v1.env = {"KEPLER_BUILD_ID": "v1"}
    await v1.start()
    try:
        assert "as version kepler:v1" in case.log.read_text()
        await wait_for(lambda: asyncio.to_thread(set_current, address, "v1"), 60, "version v1 current",
                       interval=0.5)
        spec = ServiceSpec(name="atlas", team="t", replicas=1)
        await (await case.run(CreateServiceRequest(spec=spec, requested_by="carol"))).handle.result()
        staging_v1 = await case.run(ReleaseRequest(service="atlas", env="staging", ref="main",
                                                   requested_by="carol"))
        assert (await staging_v1.handle.result()).outcome == "succeeded"
        waiting = await case.run(signed(ReleaseRequest(service="atlas", env="prod", from_env="staging",
                                                       requested_by="carol")))
        await wait_for(lambda: _stage(case, waiting, "awaiting approval"), 60, "prod's approval wait")

        platform = load_platform(case.platform_file)
        classes = [ReleaseVersionV2 if workflow_type(w) == "ReleaseVersion" else w for w in workflows.ALL]
        with ThreadPoolExecutor(max_workers=32) as executor:
            async with build_worker(client, platform, Secrets(), executor, task_queue=case.queue,
                                    build_id="v2", workflow_classes=classes):
                await wait_for(lambda: asyncio.to_thread(set_current, address, "v2"), 60,
                               "version v2 current", interval=0.5)
                staging_v2 = await case.run(ReleaseRequest(service="atlas", env="staging", ref="main",
                                                           requested_by="carol"))
                assert (await asyncio.wait_for(staging_v2.handle.result(), 120)).outcome == "succeeded"
                await decide(client, "atlas", "prod", "alice")
                assert (await asyncio.wait_for(waiting.handle.result(), 120)).outcome == "succeeded"

                assert await ran_on(client, staging_v2) == ("v2", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
                assert await v2_timers(client, staging_v2) == 1  # version 2's runbook
                assert await ran_on(client, waiting) == ("v1", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
                assert await v2_timers(client, waiting) == 0  # version 1's, to its end
                assert await ran_on(client, staging_v1) == ("v1", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
    finally:
        await v1.stop()
    assert "nondeterminism" not in case.log.read_text().lower()
    assert case.builds_queued() == 1  # one image, built once, promoted and re-released by digest


async def _stage(case: Case, started: ops.Started, stage: str) -> bool:
    return await case.stage(started.workflow_id) == stage


def test_a_bad_build_id_is_refused_before_the_worker_connects(tmp_path: Path) -> None:
    import os

    done = subprocess.run([str(BIN / "kepler"), "worker"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KEPLER_BUILD_ID": "v1; rm -rf /"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "KEPLER_BUILD_ID" in done.stderr and "letters, digits" in done.stderr
