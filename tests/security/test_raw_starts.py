"""Attacks by whoever can start workflows on the Temporal frontend: raw starts with
crafted arguments and ids, through the real client, on the time-skipping server with the
fake world's activities. Each is refused naming the rule, and nothing is deployed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from activities.temporal import TemporalActivities
from kepler.canary import CanaryReport, CanaryState
from kepler.models import CanaryProgress, CanaryRequest, CreateServiceRequest, OperationStatus, ReleaseReport, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
from kepler.settings import ApprovalPolicy, Bounds, load_platform
from kepler.payloads import EnvironmentPolicy, ExistingService
from tests.fakes.world import FakeWorld
from tests.helpers import signed

CHANGES = ("apply_release", "apply_objects", "set_routes", "scale")


@pytest.fixture
async def world(time_env) -> AsyncIterator[tuple[Any, FakeWorld, str]]:
    fake = FakeWorld()
    queue = f"q-{uuid.uuid4()}"
    running = TemporalActivities(load_platform(), client=time_env.client).running_operations
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=[*fake.activities(), running]):
        yield time_env.client, fake, queue


def changed(fake: FakeWorld) -> list[str]:
    return [c for c in fake.calls if c.split()[0] in CHANGES]


async def test_a_canary_started_with_a_crafted_state_deploys_nothing(world: tuple[Any, FakeWorld, str]) -> None:
    """The second argument of Canary is what its continue-as-new carries: a start with one
    made up (any image, any namespace, no gate) is refused before anything."""
    client, fake, queue = world
    now = datetime.now(timezone.utc)
    crafted = CanaryState(
        progress=CanaryProgress(weights=[100], interval=timedelta(seconds=10), failure_limit=1),
        policy=EnvironmentPolicy(env="prod", namespace="kube-system", approval=ApprovalPolicy(),
                                 rollback_approval=ApprovalPolicy(), bounds=Bounds(),
                                 bake_time=timedelta(0), rollout_timeout=timedelta(minutes=1)),
        spec=ServiceSpec(name="shop", team="t"), commit="e" * 40, version="evil",
        image="evil.example/miner@sha256:" + "e" * 64, previous_image="", started_at=now,
        deadline=now + timedelta(days=1))
    req = signed(CanaryRequest(service="shop", env="prod", ref="v2", requested_by="carol"))
    handle = await client.start_workflow("Canary", args=[req, crafted], id="shop@prod",
                                         task_queue=queue, result_type=CanaryReport)
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "a canary's state comes only from its own continue-as-new" in str(e.value.cause)
    assert changed(fake) == [], fake.calls


async def test_a_fake_train_parent_does_not_approve_its_child(world: tuple[Any, FakeWorld, str]) -> None:
    """A ScheduledRelease started by hand under the id `train-x@prod`, asking for a release
    with `train_approved: true`: its child sees a parent named like a train, but no signed
    approval of that train run names the commit — refused, nothing built or applied."""
    client, fake, queue = world
    release = signed(ReleaseRequest(service="shop", env="prod", ref="v1", requested_by="carol",
                                    train_approved=True, commit="1" * 40))
    handle = await client.start_workflow(
        "ScheduledRelease", ScheduledReleaseRequest(release=release), id="train-x@prod",
        task_queue=queue, result_type=ScheduledReleaseReport)
    report = await handle.result()
    assert report.outcome == "failed" and "the train's approvals do not cover commit" in report.detail
    assert changed(fake) == [] and "build" not in fake.calls


@pytest.mark.parametrize("who,signed_request,allowed", [
    ("carol", True, False),   # another team's developer
    ("bob", False, False),    # the owner's name, typed: not proof
    ("bob", True, True),      # an owner
    ("alice", True, True),    # a platform admin (identity.admins)
])
async def test_only_owners_or_admins_create_over_an_existing_service(
        world: tuple[Any, FakeWorld, str], who: str, signed_request: bool, allowed: bool) -> None:
    """`service create` with the name of another team's service would commit a new spec to
    its repository and re-point its routes: only its owners or a platform admin may."""
    client, fake, queue = world
    fake.existing = ExistingService(path="demo/shop", owners=["bob"], team="payments")
    req = CreateServiceRequest(spec=ServiceSpec(name="shop", team="growth"), requested_by=who)
    handle = await client.start_workflow("CreateService", signed(req) if signed_request else req,
                                         id="shop@all", task_queue=queue, result_type=ReleaseReport)
    if allowed:
        assert (await handle.result()).outcome == "succeeded"
        return
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "demo/shop exists and is owned by bob: only its owners or a platform admin (alice)" \
        in str(e.value.cause)
    status = await handle.query("status", result_type=OperationStatus)
    assert status.refused and status.outcome == "failed"
    assert changed(fake) == [] and "ensure_project" not in fake.calls and fake.created == []


async def test_a_release_pinned_to_an_image_from_elsewhere_deploys_nothing(
        world: tuple[Any, FakeWorld, str]) -> None:
    """A pinned image (how a train's member ships the digest approved) must come from the
    environment's own repository, even where no approval is needed."""
    client, fake, queue = world
    elsewhere = "evil.example/miner@sha256:" + "e" * 64
    req = signed(ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="carol",
                                commit="a" * 40, image=elsewhere))
    with pytest.raises(WorkflowFailureError) as e:
        await client.execute_workflow("ReleaseVersion", req, id="shop@staging", task_queue=queue,
                                      result_type=ReleaseReport)
    assert f"image: {elsewhere} is not in reg/demo/shop" in str(e.value.cause)
    assert changed(fake) == []
    with pytest.raises(ValueError, match="a pinned image needs the commit"):
        ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="carol", image=elsewhere)


async def test_a_release_pinned_to_a_digest_not_built_from_its_commit_deploys_nothing(
        world: tuple[Any, FakeWorld, str]) -> None:
    """A start pinning another build of the same repository to a reviewed commit would
    label that build with the commit (and a promotion would carry the label on): refused
    unless the registry's image of the commit is that digest."""
    client, fake, queue = world
    fake.images["a" * 40] = "sha256:" + "1" * 64  # what the commit built
    other = "reg/demo/shop@sha256:" + "2" * 64  # another build of shop
    req = signed(ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="carol",
                                commit="a" * 40, image=other))
    with pytest.raises(WorkflowFailureError) as e:
        await client.execute_workflow("ReleaseVersion", req, id="shop@staging", task_queue=queue,
                                      result_type=ReleaseReport)
    assert f"image: {other} is not the image built from commit aaaaaaaaaaaa" in str(e.value.cause)
    assert changed(fake) == []
