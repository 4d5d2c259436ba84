"""Release hooks (pre_deploy with its undo, post_deploy) in ReleaseVersion, Rollback and
Canary, on the time-skipping server with in-memory activities (tests/fakes/hooks.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from kepler.clients import operations as ops
from kepler.canary import CanaryControl
from kepler.models import CanaryRequest, OperationStatus, ReleaseRequest, RollbackRequest
from kepler.spec import Hooks
from kepler.payloads import ReleaseRecord
from tests.fakes.canary import CanaryWorld
from tests.fakes.hooks import HookWorld
from tests.fakes.world import FakeWorld, sha_of
from kepler.settings import load_platform
from starter.canary import control_signer
from tests.helpers import keep_history, signed
from workflows.common.patches import BASELINE


OLD = "reg/demo/shop@sha256:" + "0" * 64
MIGRATIONS = Hooks.model_validate({
    "pre_deploy": {"command": ["alembic", "upgrade", "head"], "timeout": 120,
                   "undo": {"command": ["alembic", "downgrade", "-1"]}},
    "post_deploy": {"command": ["./warm-cache"]}})


@pytest.fixture
async def run(time_env) -> AsyncIterator[Any]:
    """run(world, req) -> (handle, status): start `req` on a worker over `world`."""
    async def start(hw: HookWorld, req: Any) -> Any:
        queue = f"q-{uuid.uuid4()}"
        async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                          activities=hw.activities()):
            handle = (await ops.start(time_env.client, signed(req), queue)).handle
            try:
                await handle.result()
                error = ""
            except WorkflowFailureError as e:
                error = str(e.cause)
            status = await handle.query("status", result_type=OperationStatus)
            return handle, status, error
    yield start


async def until(handle: Any, check: Callable[[OperationStatus], bool], timeout: float = 15) -> None:
    """Poll `status` in real time (an activity is running: the server cannot skip time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check(status := await handle.query("status", result_type=OperationStatus)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached; last stage {status.stage!r}")
        await asyncio.sleep(0.05)


async def patch_markers(handle: Any) -> list[str]:
    """The ids of the patch markers the run wrote, in order."""
    return [json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.marker_name == "core_patch"]


def release(ref: str = "v2") -> ReleaseRequest:
    return ReleaseRequest(service="shop", env="staging", ref=ref, requested_by="carol")


def new_image(world: FakeWorld) -> str:
    return "reg/demo/shop@sha256:" + sha_of("v2")[:8] * 8


async def test_hooks_run_around_the_rollout_with_the_release_image_and_config(run, time_env) -> None:
    hw = HookWorld(FakeWorld(), MIGRATIONS)
    handle, status, error = await run(hw, release())
    assert status.outcome == "succeeded", error
    calls = hw.world.calls
    assert calls.index("hook pre_deploy") < calls.index("apply_release") \
        < calls.index("wait_rollout") < calls.index("hook post_deploy") < calls.index("record_release")
    pre, post = hw.runs
    assert pre.image == post.image == new_image(hw.world)  # the release's image, by digest
    assert pre.workload_image == OLD  # the migration ran before the new pods
    assert post.workload_image == new_image(hw.world)
    assert pre.command == ["alembic", "upgrade", "head"]
    assert pre.config == {"v": sha_of("v2")[:6]}  # the release's config, not the running one
    (recorded,) = hw.world.recorded
    assert recorded.record.undo is not None and recorded.record.undo.command == [
        "alembic", "downgrade", "-1"]  # a rollback away from v2 runs it
    assert any("pre_deploy hook shop-pre-deploy-" in n for n in status.notes)
    assert await patch_markers(handle) == [BASELINE]  # it stands for the hooks patch too
    # (release-with-hooks-one-marker.json is the same run begun on kepler-0.2.2)
    await keep_history(time_env.client, "release-with-hooks-kepler-0.2.3", handle.id)


async def test_a_release_writes_one_patch_marker_with_or_without_hooks(run, time_env) -> None:
    hw = HookWorld(FakeWorld(), None)
    handle, status, _ = await run(hw, release())
    assert status.outcome == "succeeded" and hw.runs == []
    assert await patch_markers(handle) == [BASELINE]
    # nothing between the rollout and the record: one step applies, waits and records
    names = [s.name for s in status.steps]
    assert "apply and roll out" in names and "record the release" not in names
    assert hw.world.calls[-3:] == ["apply_release", "wait_rollout", "record_release"]
    (recorded,) = hw.world.recorded
    assert recorded.record.release_id == f"{handle.id}/{handle.result_run_id}"
    await keep_history(time_env.client, "release-in-one-deploy-step", handle.id)


async def test_a_failed_pre_deploy_leaves_the_old_image_and_runs_its_undo(run) -> None:
    """A half-run migration is what the undo is for: it runs when the hook failed too."""
    hw = HookWorld(FakeWorld(), MIGRATIONS, fail={"pre_deploy"})
    _, status, error = await run(hw, release())
    assert status.outcome == "rolled_back", error
    assert "step 'wait for the pre_deploy hook' failed" in error and "pre_deploy: boom" in error
    assert "apply_release" not in hw.world.calls and hw.world.deployment["image"] == OLD
    assert hw.kinds() == ["pre_deploy", "undo"]
    assert hw.runs[1].image == new_image(hw.world)  # the down-migration ships with v2
    assert status.undone == ["pre_deploy undo `alembic downgrade -1` of v2"]


async def test_a_failed_rollout_puts_the_old_image_back_then_runs_the_undo(run) -> None:
    world = FakeWorld(rollout_fails=True)
    hw = HookWorld(world, MIGRATIONS)
    _, status, error = await run(hw, release())
    assert status.outcome == "rolled_back", error
    assert "CrashLoopBackOff" in error
    assert world.calls.index("restore_release") < world.calls.index("hook undo")
    assert hw.kinds() == ["pre_deploy", "undo"]  # no post_deploy for a failed rollout
    assert hw.runs[1].workload_image == OLD  # the old image was back when the undo began
    assert world.deployment["image"] == OLD and world.deployment["config"] == {"a": "1"}


async def test_a_failed_post_deploy_rolls_back_and_undoes_the_migration(run) -> None:
    hw = HookWorld(FakeWorld(), MIGRATIONS, fail={"post_deploy"})
    _, status, error = await run(hw, release())
    assert status.outcome == "rolled_back", error
    assert "wait for the post_deploy hook" in error
    assert hw.kinds() == ["pre_deploy", "post_deploy", "undo"]
    assert hw.world.calls.index("restore_release") < hw.world.calls.index("hook undo")
    assert hw.world.deployment["image"] == OLD
    assert not hw.world.recorded  # never live and healthy: not in the release history


async def test_an_undo_that_fails_ends_failed_naming_what_was_not_put_back(run) -> None:
    hw = HookWorld(FakeWorld(rollout_fails=True), MIGRATIONS, fail={"undo"})
    _, status, error = await run(hw, release())
    assert status.outcome == "failed"  # never rolled_back: the migration stays
    assert "NOT put back: pre_deploy undo `alembic downgrade -1` of v2" in error
    assert hw.world.deployment["image"] == OLD  # the image did go back
    assert "restore" in ", ".join(status.undone)


async def test_cancel_during_the_pre_deploy_hook_stops_it_then_runs_the_undo(time_env) -> None:
    hw = HookWorld(FakeWorld(), MIGRATIONS, hang={"pre_deploy"})
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=hw.activities()):
        handle = (await ops.start(time_env.client, signed(release()), queue)).handle
        await until(handle, lambda s: s.stage == "wait for the pre_deploy hook")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query("status", result_type=OperationStatus)
    assert status.outcome == "cancelled"
    assert hw.stopped and hw.stopped[0].startswith("shop-pre-deploy-")
    assert hw.kinds() == ["pre_deploy", "undo"] and "apply_release" not in hw.world.calls


def history_with_undo(world: FakeWorld, undo: bool = True) -> None:
    now = datetime.now(timezone.utc)
    older = "reg/demo/shop@sha256:" + "c" * 64
    world.releases = [
        ReleaseRecord(image=OLD, commit=sha_of("v2"), version="v2", at=now,
                      undo=MIGRATIONS.pre_deploy.undo if undo else None),
        ReleaseRecord(image=older, commit=sha_of("v1"), version="v1", at=now)]


async def test_rollback_away_from_a_version_with_an_undo_runs_it_after_the_target_is_live(
        run) -> None:
    world = FakeWorld()
    history_with_undo(world)
    hw = HookWorld(world, None)
    _, status, error = await run(hw, RollbackRequest(service="shop", env="staging",
                                                     requested_by="carol"))
    assert status.outcome == "succeeded", error
    (undo,) = hw.runs
    assert undo.kind == "undo" and undo.command == ["alembic", "downgrade", "-1"]
    assert undo.image == OLD  # the image rolled away from: its down-migration
    assert undo.config == {"a": "1"}  # and the config it ran with
    assert undo.workload_image.endswith("c" * 64)  # the target was live first
    assert world.calls.index("record_release") < world.calls.index("hook undo")
    assert world.recorded[0].record.undo is None  # the target's migration was never re-run


async def test_rollback_whose_undo_fails_keeps_the_target_and_ends_failed(run) -> None:
    world = FakeWorld()
    history_with_undo(world)
    hw = HookWorld(world, None, fail={"undo"})
    _, status, error = await run(hw, RollbackRequest(service="shop", env="staging",
                                                     requested_by="carol"))
    assert status.outcome == "failed" and "wait for the pre_deploy undo" in error
    assert world.deployment["image"].endswith("c" * 64)  # the broken version is not brought back


async def test_rollback_away_from_a_version_without_an_undo_runs_no_hook(run) -> None:
    world = FakeWorld()
    history_with_undo(world, undo=False)
    hw = HookWorld(world, MIGRATIONS)
    _, status, _ = await run(hw, RollbackRequest(service="shop", env="staging", requested_by="carol"))
    assert status.outcome == "succeeded" and hw.runs == []


async def test_canary_runs_its_hooks_before_any_traffic_and_undoes_on_abort(time_env) -> None:
    world = CanaryWorld()
    hw = HookWorld(world, MIGRATIONS)
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=hw.activities()):
        req = CanaryRequest(service="shop", env="staging", ref="v2", requested_by="carol",
                            steps=[10, 20, 50])
        handle = (await ops.start(time_env.client, signed(req), queue)).handle
        await until(handle, lambda s: s.canary is not None and s.canary.step == 1)
        calls = list(world.calls)
        assert calls.index("hook pre_deploy") < calls.index("apply_objects canary") \
            < calls.index("hook post_deploy") < calls.index("set_routes")
        assert hw.runs[0].workload_image == OLD  # the primary still runs the old version
        await ops.control(time_env.client, "shop", "staging", "abort", CanaryControl(by="dave"),
                          control_signer(load_platform(), "dave"))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query("status", result_type=OperationStatus)
    assert status.outcome == "aborted"
    assert hw.kinds() == ["pre_deploy", "post_deploy", "undo"]
    last_route = max(i for i, c in enumerate(world.calls) if c == "set_routes")
    assert last_route < world.calls.index("hook undo")  # traffic back to stable first
