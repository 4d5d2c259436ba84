"""A real Temporal server, and the PostgreSQL under it, each killed (kill -9) and started again
in the middle of a release, and both restarted during a canary: every run completes, every side
effect once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kepler.clients import operations as ops
from kepler.clients.temporal import connect
from kepler.models import CanaryRequest, CreateServiceRequest, ReleaseRequest
from kepler.spec import ServiceSpec
from sandbox.serve import Sandbox
from tests.helpers import sandbox_fixture
from tests.reliability.test_crash import Case, waiting_for_rollout
from tests.workers import wait_for

restart_box = sandbox_fixture("temporal-restarts", build_seconds=1, seconds_per_replica=1.5)


async def release_through(case: Case, version: str, restart: Any) -> ops.Started:
    """A release of `version` (a tag on main), `restart()` called during its rollout wait."""
    started = await case.run(ReleaseRequest(service=case.service, env="staging", ref=version,
                                            requested_by="carol"))
    await wait_for(lambda: waiting_for_rollout(case, started), 90, f"the rollout of {version}")
    await asyncio.to_thread(restart)
    return started


async def test_server_and_postgres_killed_mid_release_and_restarted_during_a_canary(
        restart_box: Sandbox, temporal_cluster: Any, tmp_path: Path) -> None:
    client = await connect(temporal_cluster.address)
    case = Case(restart_box, client, tmp_path, temporal_cluster.address, "phoenix")
    worker = await case.worker().start()
    try:
        spec = ServiceSpec(name="phoenix", team="t", replicas=3)
        await (await case.run(CreateServiceRequest(spec=spec, requested_by="carol"))).handle.result()
        project = restart_box_project(restart_box, "phoenix")
        for tag in ("v1", "v2", "v3"):
            project.commits.create({"branch": "main", "commit_message": tag, "actions": [
                {"action": "create", "file_path": f"{tag}.txt", "content": tag}]})
            project.tags.create({"tag_name": tag, "ref": "main"})

        server_crash = await release_through(case, "v1", lambda: temporal_cluster.restart_server(crash=True))
        assert (await asyncio.wait_for(server_crash.handle.result(), 180)).outcome == "succeeded"
        assert case.builds_queued() == 1 and case.image_writes("@sha256:") == 1

        postgres_crash = await release_through(case, "v2", lambda: temporal_cluster.restart_postgres(crash=True))
        assert (await asyncio.wait_for(postgres_crash.handle.result(), 180)).outcome == "succeeded"
        assert case.builds_queued() == 2 and case.image_writes("@sha256:") == 2

        canary = await case.run(CanaryRequest(service="phoenix", env="staging", ref="v3",
                                              requested_by="carol", steps=[20, 50], interval="10s"))
        await wait_for(lambda: stage_is(case, canary, "canary 20%"), 120, "the canary at 20%")
        await asyncio.to_thread(temporal_cluster.restart_server)
        await wait_for(lambda: stage_is(case, canary, "canary 50%"), 120, "the canary at 50%")
        await asyncio.to_thread(temporal_cluster.restart_postgres)
        result = await asyncio.wait_for(canary.handle.result(), 180)
        assert result.outcome == "succeeded", result
    finally:
        await worker.stop()

    assert case.builds_queued() == 3, f"{case.builds_queued()} builds for three versions"
    assert case.spec_writes()[-1]["images"] == [result.image]  # the canary's v3, promoted


def restart_box_project(box: Sandbox, name: str) -> Any:
    import gitlab

    return gitlab.Gitlab(box.urls["gitlab"], private_token=box.settings.gitlab_token).projects.get(f"demo/{name}")


async def stage_is(case: Case, started: ops.Started, stage: str) -> bool:
    return await case.stage(started.workflow_id) == stage
