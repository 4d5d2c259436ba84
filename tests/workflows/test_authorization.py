"""Who may act, verified: requests and decisions are signed statements (kepler/identity.py)
checked by the workflow itself. Every refusal comes back at once, names the rule, and
changes nothing. The attacks come through the raw Temporal client, as anyone with access
to the frontend could send them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from kepler.clients import operations as ops
from kepler.identity import DELEGATE, SYSTEM
from kepler.models import ApprovalDecision, OperationStatus, ReleaseRequest
from kepler.settings import load_platform
from starter.signing import sign, signing_key
from tests.fakes.world import FakeWorld
from tests.helpers import decide, signed


@pytest.fixture
async def world(time_env) -> AsyncIterator[tuple[Any, FakeWorld, str]]:
    fake = FakeWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=fake.activities()):
        yield time_env.client, fake, queue


async def pending(client: Any, workflow_id: str) -> OperationStatus:
    for _ in range(400):
        status = await ops.status(client, workflow_id)
        if status.pending_approval:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("never asked for approval")


def release(by: str = "carol", ref: str = "v1") -> ReleaseRequest:
    return ReleaseRequest(service="shop", env="prod", ref=ref, requested_by=by)


def key(name: str) -> Any:
    return signing_key(load_platform(), name)


async def test_each_approver_counts_once_toward_min_approvals(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    fake.min_approvals = 2
    started = await ops.start(client, signed(release()), queue)
    await pending(client, started.workflow_id)
    assert "1 of 2" in await decide(client, "shop", "prod", "alice")
    with pytest.raises(ops.Refused, match="alice has already approved"):
        await decide(client, "shop", "prod", "alice")
    assert "apply_release" not in fake.calls  # one approval is not enough
    assert await decide(client, "shop", "prod", "bob") == "approved"
    assert (await started.handle.result()).outcome == "succeeded"
    status = await ops.status(client, started.workflow_id)
    assert status.requester_verified and [(a.approver, a.verified) for a in status.approvals] == [
        ("alice", True), ("bob", True)]
    with pytest.raises(ops.Refused):  # approving twice: nothing is pending any more
        await decide(client, "shop", "prod", "bob")


async def test_approving_after_expiry_is_refused(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    started = await ops.start(client, signed(release()), queue)
    status = await pending(client, started.workflow_id)
    statement = ops.approval_statement(status, "approve", "", datetime.now(timezone.utc))
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()  # the 24 h pass on the time-skipping server
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "expired"
    late = ApprovalDecision(approver="alice", signed=sign(statement, key("alice")))
    with pytest.raises(ops.Refused, match="nothing to approve|nothing is pending"):
        await ops.decide(client, "shop", "prod", "approve", late)
    assert "apply_release" not in fake.calls


async def test_refusals_name_the_reason(world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    with pytest.raises(ops.Refused, match="nothing to approve|nothing is pending"):
        await decide(client, "shop", "prod", "alice")  # nothing started
    started = await ops.start(client, signed(release(by="alice")), queue)
    await pending(client, started.workflow_id)
    with pytest.raises(ops.Refused, match="requested this operation and may not approve it"):
        await decide(client, "shop", "prod", "alice")
    with pytest.raises(ops.Refused, match="mallory is not an approver for prod"):
        await decide(client, "shop", "prod", "mallory", "reject")
    await decide(client, "shop", "prod", "bob", "reject")
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    assert "apply_release" not in fake.calls


# --- attacks through the raw Temporal client ----------------------------------------------

async def test_a_typed_approver_name_is_not_an_approval(world: tuple[Any, FakeWorld, str]) -> None:
    """What the Temporal UI's update form sends: {"approver": "alice"}, unsigned."""
    client, fake, queue = world
    started = await ops.start(client, signed(release(by="mallory")), queue)
    await pending(client, started.workflow_id)
    with pytest.raises(ops.Refused, match="alice: unsigned; approve with `kepler approve shop"):
        await ops.decide(client, "shop", "prod", "approve", ApprovalDecision(approver="alice"))
    status = await ops.status(client, started.workflow_id)
    assert status.pending_approval and not status.approvals and "apply_release" not in fake.calls
    await started.handle.cancel()


async def test_a_typed_requester_cannot_borrow_four_eyes(world: tuple[Any, FakeWorld, str]) -> None:
    """A release started by hand saying requested_by: alice (unsigned), or signed by
    mallory but saying alice: refused before any change; no gate to approve."""
    client, fake, queue = world
    started = await ops.start(client, release(by="alice"), queue)
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    assert "the request is not signed" in str(e.value.cause)
    forged = signed(release(by="mallory")).model_copy(update={"requested_by": "alice"})
    started = await ops.start(client, forged, queue)
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    assert "the request was changed after it was signed" in str(e.value.cause)
    assert "apply_release" not in fake.calls and "build" not in fake.calls


async def test_an_approval_of_another_run_or_digest_is_refused(world: tuple[Any, FakeWorld, str],
                                                              time_env: Any) -> None:
    """Alice's approval of v1's run, replayed when v2 is pending under the same id; and one
    signed for another digest."""
    client, fake, queue = world
    first = await ops.start(client, signed(release()), queue)
    old = ops.approval_statement(await pending(client, first.workflow_id), "approve", "",
                                 datetime.now(timezone.utc))
    # ended at once (what ends it is not the point here; a cancel's compensation and
    # notification on the time-skipping server under load once hung its connection)
    await first.handle.terminate("replaced by v2")
    with pytest.raises(WorkflowFailureError):
        await first.handle.result()
    # signed at the server's time: awaiting a result lets the time-skipping server skip, and
    # it may skip on to a finished run's leftover timer (its 10-year run timeout) before the
    # client locks time again; a request signed by the wall clock is then years old
    second = await ops.start(client, signed(release(ref="v2"), await time_env.get_current_time()),
                             queue)
    await pending(client, second.workflow_id)
    replayed = ApprovalDecision(approver="alice", signed=sign(old, key("alice")))
    with pytest.raises(ops.Refused, match=f"not for run {second.run_id}"):
        await ops.decide(client, "shop", "prod", "approve", replayed)
    now = ops.approval_statement(await ops.status(client, second.workflow_id), "approve", "",
                                 datetime.now(timezone.utc))
    other = now.model_copy(update={"digests": ["reg/demo/shop@sha256:" + "f" * 64]})
    with pytest.raises(ops.Refused, match="names digests reg/demo/shop@sha256:fff"):
        await ops.decide(client, "shop", "prod", "approve",
                         ApprovalDecision(approver="alice", signed=sign(other, key("alice"))))
    other_gate = now.model_copy(update={"gate": 2})  # e.g. a canary's promotion, not its start
    with pytest.raises(ops.Refused, match="gate differs"):
        await ops.decide(client, "shop", "prod", "approve",
                         ApprovalDecision(approver="alice", signed=sign(other_gate, key("alice"))))
    assert not (await ops.status(client, second.workflow_id)).approvals
    assert "apply_release" not in fake.calls
    await second.handle.cancel()


async def test_keys_nobody_listed_and_system_identities_never_approve(
        world: tuple[Any, FakeWorld, str]) -> None:
    client, fake, queue = world
    started = await ops.start(client, signed(release()), queue)
    statement = ops.approval_statement(await pending(client, started.workflow_id), "approve", "",
                                       datetime.now(timezone.utc))
    for signer, namespace, extra, rule in (
            ("stranger", "kepler", {}, "not listed for kepler"),
            ("alerts", SYSTEM, {}, "alerts is a system identity"),
            ("alice", DELEGATE, {"on_behalf_of": "bob via slack:U1"}, "not listed for kepler-delegate")):
        forged = sign(statement.model_copy(update=extra), key(signer), namespace)
        with pytest.raises(ops.Refused, match=rule):
            await ops.decide(client, "shop", "prod", "approve",
                             ApprovalDecision(approver="alice", signed=forged))
    vouched = sign(statement.model_copy(update={"on_behalf_of": "bob via slack:U42"}),
                   key("chatops"), DELEGATE)  # the chat bot, vouching for bob
    assert await ops.decide(client, "shop", "prod", "approve",
                            ApprovalDecision(approver="bob", signed=vouched)) == "approved"
    assert (await started.handle.result()).outcome == "succeeded"
    status = await ops.status(client, started.workflow_id)
    assert [a.approver for a in status.approvals] == ["bob via slack:U42"]


async def test_an_approval_signed_too_long_ago_or_in_the_future_is_refused(
        world: tuple[Any, FakeWorld, str]) -> None:
    """An approval lets its change through for the environment's approval.valid_for (7 days)."""
    client, fake, queue = world
    started = await ops.start(client, signed(release()), queue)
    status = await pending(client, started.workflow_id)
    for skew in (timedelta(days=8), -timedelta(hours=1)):
        statement = ops.approval_statement(status, "approve", "", datetime.now(timezone.utc) - skew)
        with pytest.raises(ops.Refused, match="approvals are valid for 7 days"):
            await ops.decide(client, "shop", "prod", "approve",
                             ApprovalDecision(approver="alice", signed=sign(statement, key("alice"))))
    assert not (await ops.status(client, started.workflow_id)).approvals
    assert "apply_release" not in fake.calls
    await started.handle.cancel()


async def test_a_canary_longer_than_its_approval_lasts_is_refused(
        world: tuple[Any, FakeWorld, str]) -> None:
    """Its weights are checked against the start gate's approvals until it ends: a canary
    outliving them would be undone half way, so it is refused before anything."""
    from kepler.models import CanaryRequest

    client, fake, queue = world
    req = CanaryRequest(service="shop", env="prod", ref="v1", requested_by="carol",
                        max_duration=timedelta(days=8))
    started = await ops.start(client, signed(req), queue)
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    assert "max_duration: 8 days, 0:00:00 is longer than prod's approval.valid_for" in str(e.value.cause)
    assert "apply_release" not in fake.calls and "build" not in fake.calls
