"""Who may act: every refusal comes back at once, with its reason, and changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from kepler.models import ApprovalDecision, OperationStatus, ReleaseRequest
from kepler import operations_client as ops
from tests.fakes.world import FakeWorld


@pytest.fixture
async def world(time_env) -> AsyncIterator[tuple[Any, FakeWorld, str]]:
    fake = FakeWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=fake.activities()):
        yield time_env.client, fake, queue


async def pending(client: Any, workflow_id: str) -> None:
    for _ in range(400):
        if (await ops.status(client, workflow_id)).pending_approval:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never asked for approval")


def decision(who: str) -> ApprovalDecision:
    return ApprovalDecision(approver=who)


async def test_each_approver_counts_once_toward_min_approvals(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    fake.min_approvals = 2
    started = await ops.start(client, ReleaseRequest(service="shop", env="prod", ref="v1",
                                                     requested_by="carol"), queue)
    await pending(client, started.workflow_id)
    assert "1 of 2" in await ops.decide(client, "shop", "prod", "approve", decision("alice"))
    with pytest.raises(ops.Refused, match="alice has already approved"):
        await ops.decide(client, "shop", "prod", "approve", decision("alice"))
    assert "apply_release" not in fake.calls  # one approval is not enough
    assert await ops.decide(client, "shop", "prod", "approve", decision("bob")) == "approved"
    assert (await started.handle.result()).outcome == "succeeded"
    with pytest.raises(ops.Refused):  # approving twice: nothing is pending any more
        await ops.decide(client, "shop", "prod", "approve", decision("bob"))


async def test_approving_after_expiry_is_refused(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    started = await ops.start(client, ReleaseRequest(service="shop", env="prod", ref="v1",
                                                     requested_by="carol"), queue)
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()  # the 24 h pass on the time-skipping server
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "expired"
    with pytest.raises(ops.Refused):
        await ops.decide(client, "shop", "prod", "approve", decision("alice"))
    assert "apply_release" not in fake.calls


async def test_refusals_name_the_reason(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    with pytest.raises(ops.Refused, match="nothing to approve|nothing is pending"):
        await ops.decide(client, "shop", "prod", "approve", decision("alice"))  # nothing started
    started = await ops.start(client, ReleaseRequest(service="shop", env="prod", ref="v1",
                                                     requested_by="alice"), queue)
    await pending(client, started.workflow_id)
    with pytest.raises(ops.Refused, match="requested this operation and may not approve it"):
        await ops.decide(client, "shop", "prod", "approve", decision("alice"))
    with pytest.raises(ops.Refused, match="mallory is not an approver for prod"):
        await ops.decide(client, "shop", "prod", "reject", decision("mallory"))
    await ops.decide(client, "shop", "prod", "reject", decision("bob"))
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    assert "apply_release" not in fake.calls
