"""Preview, every branch, on the time-skipping server with in-memory activities: each push
deployed in the merge request's own namespace and said on it; torn down exactly on merge,
close (even mid-build), ttl without pushes, a stop, or to make room; nothing of anyone
else's touched."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, AsyncIterator, Callable

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

import workflows
from kepler.contracts import MERGE_REQUEST, PREVIEW
from kepler.models import OperationStatus
from kepler.previews import (
    MergeRequestEvent, MergeRequestState, PreviewReport, PreviewRequest, preview_workflow_id,
)
from tests.fakes.previews import PreviewWorld
from tests.helpers import keep_history

NS = "shop-staging-mr-{}"


def sha(n: int) -> str:
    return f"{n:040x}"


class Harness:
    def __init__(self, env: Any, world: PreviewWorld, queue: str) -> None:
        self.env, self.client, self.world, self.queue = env, env.client, world, queue

    def open(self, mr: int, head: int = 1, state: str = "opened", **extra: Any) -> None:
        self.world.mrs[mr] = MergeRequestState(iid=mr, state=state, sha=sha(head),
                                               source_branch=f"feature-{mr}", title=f"MR {mr}",
                                               **extra)

    async def hook(self, mr: int, action: str = "open") -> WorkflowHandle:
        """As the webhook receiver does: signal-with-start."""
        return await self.client.start_workflow(
            PREVIEW.workflow, PreviewRequest(service="shop", mr=mr),
            id=preview_workflow_id("shop", mr), task_queue=self.queue,
            start_signal=MERGE_REQUEST.name, start_signal_args=[MergeRequestEvent(action=action)],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING, result_type=PreviewReport)

    async def status(self, handle: WorkflowHandle) -> OperationStatus:
        return await handle.query("status", result_type=OperationStatus)

    async def until(self, handle: WorkflowHandle, check: Callable[[OperationStatus], bool],
                    what: str) -> OperationStatus:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            status = await self.status(handle)
            if check(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never reached {what}; last {status.stage!r} {status.preview}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def harness(time_env) -> AsyncIterator[Harness]:
    world = PreviewWorld(client=time_env.client)
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        yield Harness(time_env, world, queue)


def live(n: int) -> Callable[[OperationStatus], bool]:
    return lambda s: s.stage == "live" and s.preview.pushes == n


async def test_each_push_is_deployed_and_said_then_a_merge_removes_it(harness: Harness) -> None:
    w = harness.world
    harness.open(7)
    handle = await harness.hook(7)
    status = await harness.until(handle, live(1), "the first deploy")
    assert status.preview.url == "http://shop.shop-staging-mr-7.svc.cluster.local"
    assert w.namespaces[NS.format(7)]["kinds"] == ["ServiceAccount", "ConfigMap", "Deployment", "Service"]
    assert w.mr_notes[7][-1].startswith(f"Preview of {sha(1)[:12]} is up: http://shop.")
    harness.open(7, head=2)  # a push to the source branch
    await harness.hook(7, "update")
    status = await harness.until(handle, live(2), "the push deployed")
    assert status.preview.deployed_sha == sha(2) and w.mr_notes[7][-1].startswith(f"Preview of {sha(2)[:12]}")
    assert w.deployment["image"].endswith("0" * 64)  # the environment's own release untouched
    assert w.recorded == []  # a preview is never a release of the environment
    harness.open(7, head=2, state="merged")
    await harness.hook(7, "merge")
    report = await handle.result()
    assert report.outcome == "succeeded" and report.pushes == 2
    assert report.reason == "the merge request was merged"
    assert NS.format(7) not in w.namespaces
    assert w.mr_notes[7][-1] == "Preview removed: the merge request was merged."
    await keep_history(harness.client, "preview-push-push-merge", preview_workflow_id("shop", 7))


@pytest.mark.parametrize("state,action", [("closed", "close"), ("merged", "merge")])
async def test_a_close_or_merge_mid_build_stops_it_and_nothing_is_left(
        harness: Harness, state: str, action: str) -> None:
    w = harness.world
    w.build_gate = asyncio.Event()
    harness.open(8)
    handle = await harness.hook(8)
    await harness.until(handle, lambda s: "build" in s.stage, "the build")
    harness.open(8, state=state)
    await harness.hook(8, action)
    report = await handle.result()
    assert report.outcome == "succeeded" and report.pushes == 0
    assert not w.namespaces and w.mr_notes[8] == [f"Preview removed: the merge request was {state}."]


async def test_no_push_for_the_ttl_tears_it_down(harness: Harness) -> None:
    harness.open(9)
    handle = await harness.hook(9)
    await harness.until(handle, live(1), "the first deploy")
    await harness.env.sleep(timedelta(hours=1, minutes=1))
    report = await handle.result()
    assert report.outcome == "expired" and not harness.world.namespaces
    assert harness.world.mr_notes[9][-1] == "Preview removed: no push for 1:00:00."


async def test_the_cap_removes_the_oldest_idle_preview_and_says_so(harness: Harness) -> None:
    first, second, third = [await _live(harness, mr) for mr in (1, 2, 3)]
    # the oldest idle made room (at most 2); polled, since awaiting a result lets the
    # time-skipping server jump to the others' ttl
    status = await harness.until(first, lambda s: s.outcome != "running", "the eviction")
    assert status.outcome == "succeeded"
    assert harness.world.mr_notes[1][-1].startswith("Preview removed: made room")
    assert set(harness.world.namespaces) == {NS.format(2), NS.format(3)}
    for handle in (second, third):
        assert (await harness.status(handle)).stage == "live"


async def _live(harness: Harness, mr: int) -> WorkflowHandle:
    harness.open(mr)
    handle = await harness.hook(mr)
    await harness.until(handle, live(1), f"!{mr} live")
    return handle


async def test_a_stop_removes_it_and_says_so(harness: Harness) -> None:
    handle = await _live(harness, 4)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await harness.status(handle)).outcome == "cancelled"
    assert not harness.world.namespaces
    assert harness.world.mr_notes[4][-1] == "Preview removed: stopped (kepler preview stop)."


async def test_a_namespace_that_is_not_its_own_is_left_as_it_is(harness: Harness) -> None:
    w = harness.world
    w.namespaces[NS.format(5)] = {"owner": "someone-else", "image": "theirs", "kinds": []}
    harness.open(5)
    handle = await harness.hook(5)
    status = await harness.until(handle, lambda s: s.stage == "live", "live with an error")
    assert "is not this preview's" in status.preview.last_error
    assert "failed at deploy preview" in w.mr_notes[5][-1]
    harness.open(5, state="closed")
    await harness.hook(5, "close")
    await handle.result()
    assert w.namespaces[NS.format(5)] == {"owner": "someone-else", "image": "theirs", "kinds": []}


async def test_a_forged_hint_deploys_nothing_but_the_merge_requests_head(harness: Harness) -> None:
    handle = await _live(harness, 6)
    reads = harness.world.calls.count("read mr 6")
    await handle.signal(MERGE_REQUEST.name, MergeRequestEvent(action="update", sha=sha(99)))
    await handle.signal(MERGE_REQUEST.name, MergeRequestEvent(action="merge"))
    # the hints made it look again at the merge request, then wait: what it did with them
    status = await harness.until(handle, lambda s: s.stage == "live" and harness.world.calls.count(
        "read mr 6") > reads, "the hints looked at")
    assert status.outcome == "running" and status.preview.deployed_sha == sha(1)
    assert harness.world.namespaces[NS.format(6)]["owner"] == handle.id


async def test_a_forged_eviction_is_checked_and_ignored(harness: Harness) -> None:
    handle = await _live(harness, 11)
    await handle.signal(MERGE_REQUEST.name, MergeRequestEvent(action="evicted"))
    status = await harness.until(handle, lambda s: any("eviction hint" in n for n in s.notes),
                                 "the hint checked")
    assert status.outcome == "running" and status.stage == "live"
    assert NS.format(11) in harness.world.namespaces


async def test_a_merge_request_that_is_gone_ends_its_preview(harness: Harness) -> None:
    handle = await _live(harness, 12)
    del harness.world.mrs[12]  # GitLab answers NotFound (deleted)
    await handle.signal(MERGE_REQUEST.name, MergeRequestEvent(action="update"))
    report = await handle.result()
    assert report.outcome == "succeeded" and report.reason == "the merge request is gone"
    assert not harness.world.namespaces


async def test_a_fork_gets_no_preview(harness: Harness) -> None:
    harness.open(10, same_project=False)
    report = await (await harness.hook(10)).result()
    assert report.reason == "a merge request from a fork gets no preview" and report.pushes == 0
    assert not harness.world.namespaces
