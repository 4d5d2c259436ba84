"""Restarts: the Temporal dev server restarted on the same database in the middle of a
release, and a worker stopped with SIGTERM during a long wait."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from kepler.canary import CanaryReport
from kepler.models import CanaryRequest, CreateServiceRequest, ReleaseReport, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.search_attributes import ALL_KEYS, type_name
from kepler.clients.temporal import connect
from sandbox.serve import Sandbox
from kepler.clients import operations as ops
from tests.conftest import platform_yaml
from tests.helpers import free_port
from tests.helpers import sandbox_fixture
from tests.workers import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


slow_box = sandbox_fixture("restart", build_seconds=0.5, seconds_per_replica=2)


class DevServer:
    """`temporal server start-dev` on a database file we keep across restarts."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db, self.log, self.port = db, log, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        cmd = [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port",
               str(self.port), "--headless", "--db-filename", str(self.db), "--log-level", "error"]
        for key in ALL_KEYS:
            cmd += ["--search-attribute", f"{key.name}={type_name(key)}"]
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out,
                                                             start_new_session=True)

        async def up() -> bool:
            try:
                await (await connect(self.address)).workflow_service.get_system_info(
                    GetSystemInfoRequest())
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        await wait_for(up, 60, "the dev server", interval=0.2)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)


async def stage_of(client: Any, workflow_id: str) -> str:
    try:
        return (await ops.status(client, workflow_id)).stage
    except Exception:  # noqa: BLE001
        return ""


async def test_dev_server_restart_mid_release(slow_box: Sandbox, tmp_path: Path) -> None:
    server = DevServer(tmp_path / "temporal.db", tmp_path / "server.log")
    await server.start()
    platform_file = tmp_path / "kepler.yaml"
    platform_file.write_text(platform_yaml(slow_box.urls, server.address, "restart"))
    worker = await WorkerProcess(platform_file, tmp_path / "worker.log").start()
    try:
        client = await connect(server.address)
        spec = ServiceSpec(name="survivor", team="t", replicas=3)
        await (await ops.start(client, CreateServiceRequest(spec=spec, requested_by="carol"),
                               "restart")).handle.result()
        started = await ops.start(client, ReleaseRequest(service="survivor", env="staging",
                                                         ref="main", requested_by="carol"), "restart")
        await wait_for(lambda: stage_of(client, started.workflow_id), 60, "the release to run")
        await wait_for(lambda: _is(stage_of(client, started.workflow_id), "apply and roll out"), 60,
                       "the rollout wait")
        await server.stop()
        await server.start()  # same database, same port
        client = await connect(server.address)
        handle = client.get_workflow_handle(started.workflow_id, result_type=ReleaseReport)
        report = await asyncio.wait_for(handle.result(), 120)
        assert report.outcome == "succeeded"
        assert "@sha256:" in report.image

        # and in the middle of a canary, while it waits for its analysis interval
        canary = await ops.start(client, CanaryRequest(service="survivor", env="staging", ref="main",
                                                       requested_by="carol", steps=[50],
                                                       interval="10s"), "restart")
        await wait_for(lambda: _is(stage_of(client, canary.workflow_id), "canary 50%"), 90,
                       "the canary at 50%")
        await server.stop()
        await server.start()
        client = await connect(server.address)
        handle = client.get_workflow_handle(canary.workflow_id, result_type=CanaryReport)
        result = await asyncio.wait_for(handle.result(), 180)
        assert result.outcome == "succeeded", result
    finally:
        await worker.stop()
        await server.stop()


async def _is(value: Any, expected: str) -> bool:
    return (await value) == expected


async def test_sigterm_during_long_wait_hands_the_activity_over(slow_box: Sandbox, dev_env: Any,
                                                              tmp_path: Path) -> None:
    platform_file = tmp_path / "kepler.yaml"
    platform_file.write_text(platform_yaml(slow_box.urls, dev_env.client.service_client.config.target_host,
                                           "sigterm"))
    log = tmp_path / "worker.log"
    first = await WorkerProcess(platform_file, log).start()
    client = dev_env.client
    try:
        spec = ServiceSpec(name="graceful", team="t", replicas=4)
        await (await ops.start(client, CreateServiceRequest(spec=spec, requested_by="carol"),
                               "sigterm")).handle.result()
        started = await ops.start(client, ReleaseRequest(service="graceful", env="staging",
                                                         ref="main", requested_by="carol"), "sigterm")
        await wait_for(lambda: _is(stage_of(client, started.workflow_id), "apply and roll out"), 60,
                       "the rollout wait")
        code = await first.terminate(timeout=30)
        assert code == 0, log.read_text()[-2000:]
        assert "worker stopped" in log.read_text()
    except BaseException:
        await first.stop()
        raise
    second = await WorkerProcess(platform_file, log).start()
    try:
        report = await asyncio.wait_for(started.handle.result(), 120)
        assert report.outcome == "succeeded"
    finally:
        await second.stop()
