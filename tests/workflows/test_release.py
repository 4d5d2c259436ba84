"""ReleaseVersion, Rollback and CreateService, every branch, on the time-skipping server."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncio
import uuid
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

import workflows
from kepler.models import CreateServiceRequest, OperationStatus, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.payloads import ReleaseRecord, Revision
from kepler.clients import operations as ops
from tests.fakes.world import COMMITTED_AT, FakeWorld, sha_of
from tests.helpers import decide, signed


class Harness:
    def __init__(self, env: Any, world: FakeWorld, queue: str) -> None:
        self.env, self.client, self.world, self.queue = env, env.client, world, queue

    async def start(self, req: Any) -> ops.Started:
        # signed at the server's time: a time-skipping server runs ahead of the wall clock
        return await ops.start(self.client, signed(req, await self.env.get_current_time()),
                               self.queue)

    async def wait_stage(self, started: ops.Started, stage: str, timeout: float = 10) -> OperationStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await started.handle.query("status", result_type=OperationStatus)
            if status.stage == stage:
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"stage {stage!r} never reached; last {status.stage!r}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def harness(time_env) -> AsyncIterator[Harness]:
    world = FakeWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        yield Harness(time_env, world, queue)


def release(env: str = "staging", ref: str = "v1", by: str = "carol") -> ReleaseRequest:
    return ReleaseRequest(service="shop", env=env, ref=ref, requested_by=by, reason="test")


async def failure_of(started: ops.Started) -> str:
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    return str(e.value.cause)


async def test_happy_release_builds_pins_digest_applies_and_reports(harness: Harness) -> None:
    started = await harness.start(release())
    report = await started.handle.result()
    assert report.outcome == "succeeded"
    assert report.commit == sha_of("v1")
    assert report.image.startswith("reg/demo/shop@sha256:")  # deployed by digest, never a tag
    assert harness.world.deployment["image"] == report.image
    assert harness.world.calls.index("build") < harness.world.calls.index("apply_release")
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "succeeded" and status.stage == "done"
    assert [s.name for s in status.steps if s.outcome == "done"][:3] == [
        "read policy", "resolve ref", "read service spec"]
    assert any(n.event == "succeeded" for n in harness.world.notes)


async def test_cached_image_skips_the_build(harness: Harness) -> None:
    harness.world.images[sha_of("v1")] = "sha256:" + "b" * 64
    report = await (await harness.start(release())).handle.result()
    assert "build" not in harness.world.calls
    assert report.image == "reg/demo/shop@sha256:" + "b" * 64


async def test_approval_given_by_a_listed_approver(harness: Harness) -> None:
    started = await harness.start(release("prod"))
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval and status.pending_approval.approvers == ["alice", "bob"]
    assert "apply_release" not in harness.world.calls
    assert await decide(harness.client, "shop", "prod", "alice") == "approved"
    report = await started.handle.result()
    assert report.outcome == "succeeded"
    assert any("alice" in a for a in report.approved_by)


async def test_self_approval_unlisted_and_nothing_pending_are_refused(harness: Harness) -> None:
    harness.world.approvers = ["alice", "carol"]
    started = await harness.start(release("prod", by="carol"))
    await harness.wait_stage(started, "awaiting approval")
    with pytest.raises(ops.Refused, match="four eyes"):
        await decide(harness.client, "shop", "prod", "carol")
    with pytest.raises(ops.Refused, match="not an approver for prod"):
        await decide(harness.client, "shop", "prod", "mallory")
    await decide(harness.client, "shop", "prod", "alice")
    await started.handle.result()
    with pytest.raises(ops.Refused):
        await decide(harness.client, "shop", "prod", "alice")


async def test_rejection_fails_with_outcome_rejected_and_changes_nothing(harness: Harness) -> None:
    before = dict(harness.world.deployment)
    started = await harness.start(release("prod"))
    await harness.wait_stage(started, "awaiting approval")
    await decide(harness.client, "shop", "prod", "bob", "reject", "not today")
    assert "rejected by bob: not today" in await failure_of(started)
    assert harness.world.deployment == before
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "rejected"


async def test_approval_expires_after_24h_with_reminders(harness: Harness) -> None:
    started = await harness.start(release("prod"))
    message = await failure_of(started)  # the time-skipping server jumps the 24 hours
    assert "approval expired" in message
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "expired"
    reminders = [n for n in harness.world.notes if n.event == "approval_reminder"]
    assert len(reminders) == 5  # every 4 h within 24 h
    assert "apply_release" not in harness.world.calls


async def test_build_failure_fails_with_log_tail_before_any_change(harness: Harness) -> None:
    harness.world.build_fails = True
    message = await failure_of(await harness.start(release()))
    assert "step 'build' failed" in message and "make: *** boom" in message
    assert "undone: nothing" in message
    assert "apply_release" not in harness.world.calls


async def test_rollout_failure_restores_image_and_config(harness: Harness) -> None:
    before = dict(harness.world.deployment)
    harness.world.rollout_fails = True
    started = await harness.start(release())
    message = await failure_of(started)
    assert "step 'apply and roll out' failed" in message and "CrashLoopBackOff" in message
    assert "restore" in message
    assert harness.world.deployment == before  # image *and* config back
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "rolled_back" and status.undone


async def test_cancel_during_approval_changes_nothing(harness: Harness) -> None:
    started = await harness.start(release("prod"))
    await harness.wait_stage(started, "awaiting approval")
    await started.handle.cancel()
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    assert isinstance(e.value.cause, CancelledError)
    assert "apply_release" not in harness.world.calls


async def test_cancel_during_rollout_compensates_then_ends_cancelled(harness: Harness) -> None:
    before = dict(harness.world.deployment)
    harness.world.rollout_hangs = True
    started = await harness.start(release())
    await harness.wait_stage(started, "apply and roll out")
    await started.handle.cancel()
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    assert isinstance(e.value.cause, CancelledError)
    assert harness.world.deployment == before
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "cancelled" and status.undone


async def test_second_release_of_same_service_and_env_is_refused(harness: Harness) -> None:
    first = await harness.start(release("prod", by="carol"))
    await harness.wait_stage(first, "awaiting approval")
    with pytest.raises(ops.Refused) as e:
        await harness.start(release("prod", ref="v2", by="dave"))
    assert "shop@prod is busy: release" in str(e.value) and "carol" in str(e.value)
    other_env = await harness.start(release("staging", by="dave"))  # another env is free
    assert (await other_env.handle.result()).outcome == "succeeded"
    await first.handle.cancel()


async def test_unknown_ref_fails_fast(harness: Harness) -> None:
    message = await failure_of(await harness.start(release(ref="missing")))
    assert "step 'resolve ref' failed: ref 'missing' does not exist" in message


async def test_rollback_to_previous_revision(harness: Harness) -> None:
    current = harness.world.deployment["image"]
    older = "reg/demo/shop@sha256:" + "c" * 64
    harness.world.history = [Revision(revision=3, image=current, commit=sha_of("v2")),
                             Revision(revision=2, image=older, commit=sha_of("v1"))]
    harness.world.releases = [ReleaseRecord(image=current, commit=sha_of("v2"), at=datetime.now(timezone.utc)),
                              ReleaseRecord(image=older, commit=sha_of("v1"), at=datetime.now(timezone.utc))]
    started = await harness.start(RollbackRequest(service="shop", env="prod", requested_by="carol"))
    report = await started.handle.result()  # no approval: the emergency path, back to what was live
    assert report.image == older and report.commit == sha_of("v1")
    assert harness.world.deployment["image"] == older
    assert harness.world.deployment["config"] == {"v": sha_of("v1")[:6]}  # config of that commit
    assert harness.world.routes and harness.world.routes.stable == 100


async def test_rollback_to_an_image_only_the_replicasets_remember_waits_for_approval(
        harness: Harness) -> None:
    """Kepler's release history does not name it (a workload from before the history): in
    an environment that requires approval, it is approved like a release."""
    older = "reg/demo/shop@sha256:" + "c" * 64
    harness.world.history = [Revision(revision=3, image=harness.world.deployment["image"],
                                      commit=sha_of("v2")),
                             Revision(revision=2, image=older, commit=sha_of("v1"))]
    started = await harness.start(RollbackRequest(service="shop", env="prod", requested_by="carol"))
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval and status.pending_approval.digests == [older]
    assert "apply_release" not in harness.world.calls
    await decide(harness.client, "shop", "prod", "alice")
    assert (await started.handle.result()).image == older


async def test_rollback_without_history_fails_clearly(harness: Harness) -> None:
    started = await harness.start(RollbackRequest(service="shop", env="prod", requested_by="carol"))
    assert "no earlier release" in await failure_of(started)


async def test_create_service_lays_down_everything(harness: Harness) -> None:
    spec = ServiceSpec(name="shop", team="payments", owners=["alice"])
    started = await harness.start(CreateServiceRequest(spec=spec, requested_by="carol"))
    assert started.workflow_id == "shop@all"
    report = await started.handle.result()
    assert report.outcome == "succeeded"
    for env in ("staging", "prod"):
        for kind in ("Namespace", "Deployment", "Service", "DestinationRule", "VirtualService"):
            assert any(c.startswith(f"{env}/{kind}/") for c in harness.world.created), (env, kind)
    assert "gitlab/shop" in harness.world.created and "jenkins/shop" in harness.world.created


async def test_create_service_failure_undoes_only_what_it_created(harness: Harness) -> None:
    harness.world.fail_step = "apply_objects staging"
    spec = ServiceSpec(name="shop", team="payments")
    message = await failure_of(await harness.start(CreateServiceRequest(spec=spec, requested_by="carol")))
    assert "staging: objects and routes" in message
    assert harness.world.created == []  # prod objects, job and project all deleted


async def test_search_attributes_show_each_wait_and_the_outcome_with_few_writes(
        harness: Harness) -> None:
    """The UI filters on KeplerStage/KeplerVersion/KeplerOutcome: current at every wait
    and at the end, while quick steps cost no visibility write of their own."""
    from temporalio.api.enums.v1 import EventType

    from kepler import search_attributes as sa

    started = await harness.start(release("prod"))
    await harness.wait_stage(started, "awaiting approval")
    attrs = (await started.handle.describe()).typed_search_attributes
    assert attrs.get(sa.STAGE) == "awaiting approval"
    assert attrs.get(sa.VERSION) == f"v1@{sha_of('v1')[:8]}"
    assert attrs.get(sa.OUTCOME) == "running" and attrs.get(sa.SERVICE) == "shop"
    await decide(harness.client, "shop", "prod", "alice")
    assert (await started.handle.result()).outcome == "succeeded"
    attrs = (await started.handle.describe()).typed_search_attributes
    assert (attrs.get(sa.STAGE), attrs.get(sa.OUTCOME)) == ("done", "succeeded")
    # what kepler metrics reads (lead time, --team), written with the outcome: no extra write
    assert (attrs.get(sa.COMMIT), attrs.get(sa.TEAM)) == (sha_of("v1"), "t")
    assert attrs.get(sa.COMMIT_TIME) == COMMITTED_AT
    events = [e async for e in started.handle.fetch_history_events()]
    upserts = [e for e in events
               if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    # each patch marker's own TemporalChangeVersion (coalesced attributes, the lifecycle,
    # sealed authority, the freeze check, local reads; the signed gate's only where a gate
    # opens), then build, approval, rollout wait, outcome (was one per step: 13)
    assert len(upserts) <= 10, len(upserts)
