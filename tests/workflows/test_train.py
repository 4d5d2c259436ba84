"""ReleaseTrain on the time-skipping server, with in-memory activities for four services."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows
from kepler import naming
from kepler.models import OperationStatus, ReleaseRequest
from kepler.train import TrainReport, TrainRequest, waves
from kepler.clients import operations as ops
from tests.fakes.fleet import FleetWorld, original
from tests.helpers import decide, keep_history, signed


class Harness:
    def __init__(self, env: Any, world: FleetWorld, queue: str) -> None:
        self.env, self.client, self.world, self.queue = env, env.client, world, queue

    async def start(self, req: Any) -> ops.Started:
        # signed at the server's time: awaiting a result lets the time-skipping server skip,
        # possibly on to a finished run's leftover 10-year run timeout, so the wall clock
        # can be years behind it (as in test_authorization.py)
        return await ops.start(self.client, signed(req, await self.env.get_current_time()),
                               self.queue)

    async def wait(self, workflow_id: str, check: Any, what: str, timeout: float = 15) -> OperationStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        last = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                last = await ops.status(self.client, workflow_id)
                if check(last):
                    return last
            except Exception:  # noqa: BLE001 - not started yet
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{workflow_id} never reached {what}; last {last}")


@pytest.fixture
async def harness(time_env) -> AsyncIterator[Harness]:
    world = FleetWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        yield Harness(time_env, world, queue)


def train(env: str, *members: tuple[str, list[str]], ref: str = "v2", name: str = "nightly") -> TrainRequest:
    return TrainRequest(name=name, env=env, requested_by="carol", reason="test", members=[
        {"service": s, "ref": ref, "depends_on": deps} for s, deps in members])


CHAIN = (("db", []), ("api", ["db"]), ("web", ["api"]), ("worker", ["web"]))


async def test_third_of_four_fails_every_released_member_is_rolled_back_in_reverse_order(
        harness: Harness) -> None:
    world = harness.world
    world.crash.add("web")
    started = await harness.start(train("prod", *CHAIN))
    assert started.workflow_id == "train-nightly@prod"

    # one gate for the whole train; the requester may not approve it
    status = await harness.wait(started.workflow_id, lambda s: s.stage == "awaiting approval", "approval")
    assert status.pending_approval.approvers == ["alice", "bob"]
    assert not any(e[0] == "apply" for e in world.events)  # nothing changed before approval
    with pytest.raises(ops.Refused, match="four eyes"):
        await decide(harness.client, "train-nightly", "prod", "carol")
    assert await decide(harness.client, "train-nightly", "prod", "alice") == "approved"

    with pytest.raises(WorkflowFailureError) as failed:
        await started.handle.result()
    message = str(failed.value.cause)
    assert "web failed" in message and "CrashLoopBackOff" in message
    assert "rolled back: api, db" in message

    # released in dependency order; web undid itself; then api, then db; worker never ran
    assert [e for e in world.events if e[0] in ("apply", "restore")] == [
        ("apply", "db"), ("apply", "api"), ("apply", "web"),
        ("restore", "web"), ("restore", "api"), ("restore", "db")]
    for service in ("db", "api", "web"):
        d = world.deployments[service]
        assert (d["image"], d["config"], d["replicas"]) == (
            original(service)["image"], {"v": "old"}, 2), service
    assert "worker" not in world.deployments

    report = await started.handle.query("report", result_type=TrainReport)
    assert [(m.service, m.outcome) for m in report.members] == [
        ("db", "rolled_back"), ("api", "rolled_back"), ("web", "rolled_back"),
        ("worker", "not_started")]
    assert report.rolled_back == ["api", "db"] and report.outcome == "rolled_back"
    assert "CrashLoopBackOff" in report.member("web").error
    assert report.member("db").rollback.startswith("restored reg/demo/db@sha256:000")
    final = await ops.status(harness.client, started.workflow_id)
    assert final.outcome == "rolled_back" and final.undone[0].startswith("api: restore")
    await keep_history(harness.client, "train-rolled-back", started.workflow_id)

    # the members did not ask again: the train's approval stood for theirs
    child = await ops.status(harness.client, "db@prod")
    assert child.pending_approval is None
    assert any(s.name == "approval" and s.outcome == "skipped"
               and "train-nightly@prod" in s.detail for s in child.steps)


async def test_independent_members_run_in_parallel_and_the_report_lists_each(harness: Harness) -> None:
    world = harness.world
    world.rollout_seconds = 0.3
    req = train("staging", ("db", []), ("api", ["db"]), ("search", ["db"]), ("web", ["api", "search"]))
    assert waves(req.members) == [["db"], ["api", "search"], ["web"]]
    started = await harness.start(req)
    report: TrainReport = await started.handle.result()
    assert report.outcome == "succeeded"
    assert [(m.service, m.wave, m.outcome) for m in report.members] == [
        ("db", 1, "succeeded"), ("api", 2, "succeeded"), ("search", 2, "succeeded"),
        ("web", 3, "succeeded")]
    assert world.max_parallel == 2  # api and search rolled out at the same time
    applies = [s for e, s in world.events if e == "apply"]
    assert applies[0] == "db" and applies[-1] == "web"
    assert all(world.deployments[s]["image"].startswith(f"reg/demo/{s}@sha256:") and
               world.deployments[s]["image"] != original(s)["image"] for s in applies)


async def test_a_member_held_by_a_manual_release_is_refused_and_the_train_undoes_the_rest(
        harness: Harness) -> None:
    manual = await harness.start(ReleaseRequest(service="api", env="prod", ref="hotfix",
                                                requested_by="dave"))
    await harness.wait("api@prod", lambda s: s.stage == "awaiting approval", "approval")
    started = await harness.start(train("prod", ("db", []), ("api", ["db"])))
    await harness.wait(started.workflow_id, lambda s: s.stage == "awaiting approval", "approval")
    await decide(harness.client, "train-nightly", "prod", "bob")
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    report = await started.handle.query("report", result_type=TrainReport)
    assert report.member("api").error == "api@prod is busy with another operation"
    assert report.rolled_back == ["db"]
    assert world_image(harness, "db") == original("db")["image"]
    assert (await ops.status(harness.client, "api@prod")).stage == "awaiting approval"  # untouched
    await manual.handle.cancel()


def world_image(h: Harness, service: str) -> str:
    return h.world.deployments[service]["image"]


async def test_unknown_member_and_busy_member_fail_before_any_change(harness: Harness) -> None:
    req = TrainRequest(name="t", env="staging", requested_by="carol", members=[
        {"service": "db", "ref": "v2"}, {"service": "api", "ref": "missing", "depends_on": ["db"]}])
    with pytest.raises(WorkflowFailureError) as e:
        await (await harness.start(req)).handle.result()
    assert "api: resolve missing" in str(e.value.cause) and "does not exist" in str(e.value.cause)
    harness.world.busy["db"] = "db@staging is busy: canary v3 started by erin"
    with pytest.raises(WorkflowFailureError) as e:
        await (await harness.start(train("staging", ("db", []), name="t2"))).handle.result()
    assert "canary v3 started by erin" in str(e.value.cause)
    assert not [ev for ev in harness.world.events if ev[0] in ("snapshot", "apply")]


async def test_a_release_started_on_its_own_cannot_skip_approval_with_the_train_flag(
        harness: Harness) -> None:
    started = await harness.start(ReleaseRequest(service="shop", env="prod", ref="v1",
                                                 requested_by="carol", train_approved=True))
    status = await harness.wait("shop@prod", lambda s: s.stage == "awaiting approval", "approval")
    assert status.pending_approval is not None
    assert ("apply", "shop") not in harness.world.events
    await started.handle.cancel()


def test_cycles_unknown_and_repeated_members_are_refused_before_anything_starts() -> None:
    with pytest.raises(ValidationError, match=r"dependency cycle: api -> web -> api"):
        train("staging", ("api", ["web"]), ("web", ["api"]))
    with pytest.raises(ValidationError, match=r"members.web.depends_on: cache is not a member"):
        train("staging", ("web", ["cache"]))
    with pytest.raises(ValidationError, match=r"web repeated"):
        train("staging", ("web", []), ("web", []))
    with pytest.raises(ValidationError, match=r"cannot depend on itself"):
        train("staging", ("web", ["web"]))


async def test_a_member_released_again_meanwhile_is_left_alone(harness: Harness) -> None:
    """Between the member's release and the train's rollback, someone else released it:
    the train does not overwrite that newer release, and says so."""
    world = harness.world
    world.crash.add("api")

    def someone_released_db(w: FleetWorld) -> None:
        w.deployments["db"]["annotations"][naming.RELEASE_ID] = "db@staging/other-run"
        w.deployments["db"]["annotations"][naming.REQUESTED_BY] = "dave"
        w.deployments["db"]["image"] = "reg/demo/db@sha256:" + "d" * 64

    world.on_restore["api"] = someone_released_db  # runs as api undoes itself
    started = await harness.start(train("staging", ("db", []), ("api", ["db"])))
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    report = await started.handle.query("report", result_type=TrainReport)
    assert report.rolled_back == []
    assert report.member("db").rollback.startswith("left alone: changed since the train released it")
    assert "by dave" in report.member("db").rollback
    assert world.deployments["db"]["image"] == "reg/demo/db@sha256:" + "d" * 64
    assert ("restore", "db") not in world.events


async def test_a_member_that_could_not_put_itself_back_makes_the_train_failed(
        harness: Harness) -> None:
    """api crashes and its own undo fails too: db is put back, but the train must not
    claim rolled_back while api is left half-released; it names what is not put back."""
    world = harness.world
    world.crash.add("api")

    def restore_refused(w: FleetWorld) -> None:
        raise ApplicationError("forbidden", type="Unauthorized", non_retryable=True)

    world.on_restore["api"] = restore_refused
    started = await harness.start(train("staging", ("db", []), ("api", ["db"])))
    with pytest.raises(WorkflowFailureError) as failed:
        await started.handle.result()
    assert getattr(failed.value.cause, "type", "") == "KeplerFailed"
    status = await ops.status(harness.client, started.workflow_id)
    assert status.outcome == "failed"
    assert "NOT put back: api: restore reg/demo/api@sha256:000" in status.error
    assert world.deployments["db"]["image"] == original("db")["image"]  # db was put back


async def test_members_release_the_commits_the_train_resolved(harness: Harness) -> None:
    """The approver saw commits; a member must not resolve its ref again later (the ref
    may have moved): each child releases the commit the train resolved."""
    started = await harness.start(train("staging", ("db", []), ("api", ["db"])))
    report = await started.handle.result()
    assert report.outcome == "succeeded"
    assert harness.world.calls.count("resolve_ref") == 2  # the train's own, once a member
    for service in ("db", "api"):
        child = await ops.status(harness.client, f"{service}@staging")
        step = next(s for s in child.steps if s.name == "resolve ref")
        assert step.outcome == "skipped" and report.member(service).commit[:12] in step.detail
        assert child.version == f"v2@{report.member(service).commit[:8]}"


async def test_the_gate_names_every_digest_and_members_ship_exactly_those(harness: Harness) -> None:
    """Members are built before the gate, so the approver sees each digest; a tag pushed
    again after the approval changes nothing: each member ships the digest approved."""
    started = await harness.start(train("prod", ("db", []), ("api", ["db"])))
    status = await harness.wait(started.workflow_id, lambda s: s.stage == "awaiting approval", "approval")
    commit = status.pending_approval.commits[0]
    approved = {s: f"reg/demo/{s}@{harness.world.images[commit]}" for s in ("db", "api")}
    assert sorted(status.pending_approval.digests) == sorted(approved.values())
    assert not any(e[0] == "apply" for e in harness.world.events)
    harness.world.images[commit] = "sha256:" + "e" * 64  # the commit's tag, re-pushed
    assert await decide(harness.client, "train-nightly", "prod", "alice") == "approved"
    report = await started.handle.result()
    assert report.outcome == "succeeded"
    for service, image in approved.items():
        assert harness.world.deployments[service]["image"] == image, service
        assert report.member(service).image == image
