"""kill -9 the worker at each step of a ReleaseVersion, start a new one: every release ends
with the right outcome, the image is applied once and the build triggered once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import gitlab
import httpx
import pytest
from temporalio.client import Client

from kepler.models import CreateServiceRequest, ReleaseRequest
from kepler.spec import ServiceSpec
from sandbox.serve import Sandbox
from kepler.clients import operations as ops
from tests.conftest import platform_yaml
from tests.helpers import sandbox_fixture, signed
from tests.workers import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e


slow_box = sandbox_fixture("crash", build_seconds=3, seconds_per_replica=1.5)
"""Builds and rollouts slow enough to kill a worker in the middle of them."""


class Case:
    def __init__(self, box: Sandbox, client: Client, tmp: Path, address: str, name: str) -> None:
        self.box, self.client, self.service = box, client, name
        self.queue = f"crash-{name}"
        self.platform_file = tmp / f"{name}.yaml"
        self.platform_file.write_text(platform_yaml(box.urls, address, self.queue))
        self.log = tmp / f"{name}-worker.log"

    def worker(self) -> WorkerProcess:
        return WorkerProcess(self.platform_file, self.log)

    async def run(self, req: Any) -> ops.Started:
        return await ops.start(self.client, signed(req), self.queue)

    def audit(self, standin: str) -> list[dict]:
        return httpx.get(f"{self.box.urls[standin]}/_sandbox/audit").json()

    def builds_queued(self) -> int:
        return sum(1 for e in self.audit("jenkins")
                   if e["action"] == "queue_build" and e["job"] == f"kepler-{self.service}")

    def spec_writes(self) -> list[dict]:
        """Kepler's writes of the Deployment's spec (each a new generation; a write of its
        metadata only, the release history, is not one)."""
        writes, generation = [], None
        for e in self.audit("kubernetes"):
            if e.get("kind") != "Deployment" or e.get("name") != self.service:
                continue
            new_spec, generation = e.get("generation") != generation, e.get("generation")
            if new_spec and e.get("by") == "api" and e["action"] != "create":
                writes.append(e)
        return writes

    def image_writes(self, image_part: str) -> int:
        return sum(1 for e in self.spec_writes()
                   if any(image_part in i for i in e.get("images") or []))

    async def stage(self, workflow_id: str) -> str:
        try:
            status = await ops.status(self.client, workflow_id)
        except Exception:  # noqa: BLE001 - not started or no worker for a moment
            return ""
        return status.stage


async def crash_case(slow_box: Sandbox, dev_env: Any, tmp_path: Path, name: str,
                     kill_when: Callable[[Case, ops.Started], Any], crash: bool = False) -> tuple[Case, str]:
    case = Case(slow_box, dev_env.client, tmp_path, dev_env.client.service_client.config.target_host, name)
    first = await case.worker().start()
    try:
        spec = ServiceSpec(name=name, team="t", replicas=2)
        await (await case.run(CreateServiceRequest(spec=spec, requested_by="carol"))).handle.result()
        ref = "main"
        if crash:
            await (await case.run(ReleaseRequest(service=name, env="staging", ref="main",
                                                 requested_by="carol"))).handle.result()
            project = gitlab.Gitlab(slow_box.urls["gitlab"], private_token=slow_box.settings.gitlab_token
                                    ).projects.get(f"demo/{name}")
            ref = project.commits.create({"branch": "main", "commit_message": "crash", "actions": [
                {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"}]}).id
        started = await case.run(ReleaseRequest(service=name, env="staging", ref=ref, requested_by="carol"))
        await wait_for(lambda: kill_when(case, started), 90, f"the kill point of {name}")
        first.kill9()
        await first.proc.wait()
    except BaseException:
        await first.stop()
        raise
    second = await case.worker().start()
    try:
        try:
            report = await asyncio.wait_for(started.handle.result(), 120)
            outcome = report.outcome
        except Exception:  # noqa: BLE001 - a failed release's outcome is in its status
            outcome = (await ops.status(case.client, started.workflow_id)).outcome
    finally:
        await second.stop()
    return case, outcome


async def waiting_for_rollout(c: Case, s: ops.Started) -> bool:
    return await c.stage(s.workflow_id) == "apply and roll out"


async def compensating(c: Case, s: ops.Started) -> bool:
    return await c.stage(s.workflow_id) in ("compensating", "restore previous release")


async def test_kill_9_at_each_step_then_a_new_worker_finishes(slow_box: Sandbox, dev_env: Any,
                                                              tmp_path: Path) -> None:
    """The four cases run at once, each with its own task queue and worker process."""
    (build, o1), (rollout, o2), (apply, o3), (undo, o4) = await asyncio.gather(
        crash_case(slow_box, dev_env, tmp_path, "crash-build", lambda c, s: c.builds_queued() >= 1),
        crash_case(slow_box, dev_env, tmp_path, "crash-rollout", waiting_for_rollout),
        crash_case(slow_box, dev_env, tmp_path, "crash-apply", lambda c, s: c.image_writes("@sha256:") >= 1),
        crash_case(slow_box, dev_env, tmp_path, "crash-undo", compensating, crash=True))

    for case, outcome in ((build, o1), (rollout, o2), (apply, o3)):
        assert outcome == "succeeded", case.service
        assert case.builds_queued() == 1, f"{case.service}: build triggered {case.builds_queued()} times"
        assert case.image_writes("@sha256:") == 1, f"{case.service}: image written more than once"

    assert o4 == "rolled_back"
    history = undo.spec_writes()
    good, bad, back = history[0]["images"], history[1]["images"], history[-1]["images"]
    assert back == good and bad != good  # the crashing image was replaced by the good one
    assert len(history) == 3  # release v1, apply v2, restore v1: each written exactly once
