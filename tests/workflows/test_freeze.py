"""Freeze windows, every rule, on the time-skipping server: a window or an ad-hoc freeze
refuses a release before any change (naming it and when it ends), `after_freeze` waits on
a durable timer and starts after the end, `kepler unfreeze` ends an ad-hoc freeze (only
signed, for its run, by the one who froze or an approver), rollbacks are never held, and a
break-glass goes through only with two approvers other than the requester."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import uuid
from typing import Any

import pytest
from temporalio.worker import Worker

import workflows
from activities.temporal import TemporalActivities
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from kepler import freeze as freeze_module
from kepler.clients import freezes as freeze_client
from kepler.freeze import (
    EnvironmentFreeze, FreezeReport, FreezeRequest, FreezeWindow, UnfreezeRequest,
)
from kepler.models import CanaryRequest, OperationStatus, ReleaseRequest, RollbackRequest
from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
from kepler.settings import load_platform
from kepler.payloads import ReleaseRecord
from kepler.clients import operations as ops
from starter.signing import sign, signing_key
from tests.fakes.world import FakeWorld, sha_of
from tests.helpers import decide, keep_history, signed
from tests.workflows.test_release import Harness, failure_of, harness  # noqa: F401


def window(start: timedelta = -timedelta(hours=1), length: timedelta = timedelta(hours=3),
           name: str = "release-party") -> EnvironmentFreeze:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return EnvironmentFreeze(windows=[FreezeWindow(name=name, reason="the big launch",
                                                   start=now + start, end=now + start + length)])


def release(**fields: object) -> ReleaseRequest:
    return ReleaseRequest(**{"service": "shop", "env": "prod", "ref": "v1", "requested_by": "carol",
                             "reason": "test", **fields})


async def frozen_by(harness: Harness, who: str = "carol",  # noqa: F811
                    length: timedelta = timedelta(hours=2)) -> ops.Started:
    """An ad-hoc freeze of prod, in force once this returns."""
    harness.world.temporal = harness.client
    started = await harness.start(FreezeRequest(env="prod", duration=length, reason="incident 42",
                                                requested_by=who))
    for _ in range(200):
        if await freeze_client.adhoc_freezes(harness.client, "prod"):
            return started
        await asyncio.sleep(0.05)
    raise AssertionError("the freeze never came into force")


async def unfreeze(harness: Harness, who: str, run_id: str | None = None, **fields: object) -> str:  # noqa: F811
    active = await freeze_client.running_freeze(harness.client, "prod")
    statement = freeze_client.unfreeze_statement(active, "over", datetime.now(timezone.utc))
    statement = statement.model_copy(update={"run_id": run_id or active.run_id, **fields})
    req = UnfreezeRequest(requested_by=who, signed=sign(statement, signing_key(load_platform(), who)))
    return await freeze_client.unfreeze(harness.client, "prod", req)


async def test_a_window_refuses_a_release_naming_it_and_its_end(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window()
    end = harness.world.freeze.windows[0].end
    before = dict(harness.world.deployment)
    started = await harness.start(release())
    message = await failure_of(started)
    assert "prod is frozen by window 'release-party': the big launch" in message
    assert f"it ends at {end:%Y-%m-%d %H:%M:%S} UTC" in message
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.refused and status.outcome == "failed"  # the CLI exits 3
    assert harness.world.deployment == before
    assert not {"resolve_ref", "build", "apply_release"} & set(harness.world.calls)
    await keep_history(harness.client, "release-refused-by-a-freeze", started.workflow_id)


async def test_a_window_elsewhere_or_over_refuses_nothing(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window(start=-timedelta(hours=4))  # ended an hour ago
    started = await harness.start(release(env="staging"))
    assert (await started.handle.result()).outcome == "succeeded"


async def test_after_freeze_waits_on_a_timer_and_starts_when_the_window_ends(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window(length=timedelta(hours=3))
    end = harness.world.freeze.windows[0].end
    started = await harness.start(release(after_freeze=True))
    status = await harness.wait_stage(started, f"waiting for freeze release-party to end at "
                                      f"{end:%Y-%m-%d %H:%M:%S} UTC")
    assert "resolve_ref" not in harness.world.calls
    await harness.env.sleep(timedelta(hours=2, minutes=1))  # the time-skipping server jumps
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval.deadline - timedelta(hours=24) >= end  # it began after the end
    await decide(harness.client, "shop", "prod", "alice")
    assert (await started.handle.result()).outcome == "succeeded"
    events = [e async for e in started.handle.fetch_history_events()]
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in events)
    await keep_history(harness.client, "release-after-freeze", started.workflow_id)


async def test_an_adhoc_freeze_refuses_until_unfrozen(harness: Harness) -> None:  # noqa: F811
    with harness.env.auto_time_skipping_disabled():  # the freeze must not run out meanwhile
        freeze = await frozen_by(harness, "carol")
        started = await harness.start(release(ref="v2", requested_by="dave"))
        message = await failure_of(started)
        assert "prod is frozen by freeze@prod (by carol): incident 42" in message
        assert "apply_release" not in harness.world.calls
        # only the one who froze it or a prod approver, signed for this run, fresh
        with pytest.raises(ops.Refused, match="dave may not unfreeze prod"):
            await unfreeze(harness, "dave")
        with pytest.raises(ops.Refused, match="run_id"):
            await unfreeze(harness, "alice", run_id="another-run")
        with pytest.raises(ops.Refused, match="valid for 0:10:00"):
            await unfreeze(harness, "alice", issued_at=datetime.now(timezone.utc) - timedelta(hours=1))
        with pytest.raises(ops.Refused, match="unsigned"):
            await freeze_client.unfreeze(harness.client, "prod", UnfreezeRequest(requested_by="alice"))
        assert await freeze_client.adhoc_freezes(harness.client, "prod")  # still in force
        assert await unfreeze(harness, "alice") == "prod unfrozen by alice"
        report = await freeze.handle.result()
        assert (report.outcome, report.ended_by) == ("succeeded", "alice")
        assert not await freeze_client.adhoc_freezes(harness.client, "prod")
        assert [n.event for n in harness.world.notes if n.service == "*"] == ["frozen", "unfrozen"]
        await keep_history(harness.client, "freeze-unfrozen", freeze.workflow_id)
        again = await harness.start(release(ref="v2", requested_by="dave"))
        await harness.wait_stage(again, "awaiting approval")
        await again.handle.cancel()


async def test_an_adhoc_freeze_ends_at_its_time_and_its_id_is_free_again(harness: Harness) -> None:  # noqa: F811
    freeze = await frozen_by(harness, "carol", length=timedelta(minutes=30))
    with pytest.raises(ops.Refused, match="freeze@prod is busy: freeze"):
        await harness.start(FreezeRequest(env="prod", duration=timedelta(hours=1), reason="x",
                                          requested_by="dave"))
    report: FreezeReport = await freeze.handle.result()  # time skips to its end
    assert report.outcome == "succeeded" and report.ended_by == ""
    assert report.ended_at - report.since >= timedelta(minutes=30)
    assert (await frozen_by(harness, "dave")).workflow_id == "freeze@prod"


async def test_a_freeze_must_be_signed_by_a_person(harness: Harness) -> None:  # noqa: F811
    harness.world.temporal = harness.client
    handle = await harness.client.start_workflow(
        "Freeze", FreezeRequest(env="prod", duration=timedelta(hours=1), reason="x",
                                requested_by="mallory"),
        id="freeze@prod", task_queue=harness.queue, result_type=FreezeReport)
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "not signed" in str(e.value.cause) or "unsigned" in str(e.value.cause), e.value.cause
    assert not await freeze_client.adhoc_freezes(harness.client, "prod")


async def test_after_freeze_waits_for_an_adhoc_freeze_lifted_early(harness: Harness) -> None:  # noqa: F811
    await frozen_by(harness, "carol", length=timedelta(hours=6))
    started = await harness.start(release(env="prod", after_freeze=True))
    await harness.wait_stage(started, "waiting for freeze freeze@prod to end at "
                             + (await freeze_client.adhoc_freezes(harness.client, "prod"))[0]
                             .until.strftime("%Y-%m-%d %H:%M:%S UTC"))
    await unfreeze(harness, "carol")  # the one who froze it
    await harness.env.sleep(timedelta(minutes=6))  # its next look, not six hours
    await harness.wait_stage(started, "awaiting approval")
    await started.handle.cancel()


async def test_rollbacks_are_never_held_by_a_freeze(harness: Harness) -> None:  # noqa: F811
    with harness.env.auto_time_skipping_disabled():  # the freeze must not run out meanwhile
        harness.world.freeze = window()
        await frozen_by(harness, "carol")
        current, older = harness.world.deployment["image"], "reg/demo/shop@sha256:" + "c" * 64
        now = datetime.now(timezone.utc)
        harness.world.releases = [ReleaseRecord(image=current, commit=sha_of("v2"), at=now),
                                  ReleaseRecord(image=older, commit=sha_of("v1"), at=now)]
        started = await harness.start(RollbackRequest(service="shop", env="prod", requested_by="carol"))
        assert (await started.handle.result()).image == older
        assert harness.world.deployment["image"] == older


async def test_break_glass_needs_two_approvers_other_than_the_requester(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window()
    started = await harness.start(release(break_glass=True, reason="hotfix for incident 42"))
    status = await harness.wait_stage(started, "awaiting approval")
    pending = status.pending_approval
    assert (pending.operation, pending.min_approvals) == ("break-glass release", 2)
    assert "requested this operation" in str(await _refused(harness, "carol"))  # four eyes
    assert await decide(harness.client, "shop", "prod", "alice") == "approval recorded (1 of 2)"
    assert "already approved" in str(await _refused(harness, "alice"))
    assert "apply_release" not in harness.world.calls
    assert await decide(harness.client, "shop", "prod", "bob") == "approved"
    report = await started.handle.result()
    assert report.outcome == "succeeded" and sorted(report.approved_by) == ["alice", "bob"]
    assert harness.world.recorded[-1].record.break_glass == "hotfix for incident 42"  # history
    glass = [n for n in harness.world.notes if n.event == "break_glass"]
    assert len(glass) == 2 and "BREAK-GLASS release of shop v1" in glass[0].text
    assert "hotfix for incident 42" in glass[0].text and "approved by alice, bob" in glass[1].text
    await keep_history(harness.client, "release-break-glass", started.workflow_id)


async def _refused(harness: Harness, who: str) -> Exception:  # noqa: F811
    with pytest.raises(ops.Refused) as e:
        await decide(harness.client, "shop", "prod", who)
    return e.value


async def test_break_glass_without_two_other_approvers_is_refused(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window()
    started = await harness.start(release(break_glass=True, reason="hotfix", requested_by="alice"))
    message = await failure_of(started)
    assert "prod lists 1 approver(s) other than alice (bob), and a break-glass needs 2" in message
    assert "apply_release" not in harness.world.calls


async def test_a_canary_is_refused_too_and_a_break_glass_needs_a_reason(harness: Harness) -> None:  # noqa: F811
    harness.world.freeze = window()
    started = await harness.start(CanaryRequest(service="shop", env="prod", ref="v2",
                                                requested_by="carol"))
    assert "prod is frozen by window 'release-party'" in await failure_of(started)
    assert not {"apply_objects prod", "set_routes"} & set(harness.world.calls)
    with pytest.raises(ValueError, match="reason: --break-glass needs a reason"):
        release(break_glass=True, reason="")
    with pytest.raises(ValueError, match="one of the two"):
        release(break_glass=True, after_freeze=True)


async def test_a_scheduled_release_skips_its_fire_during_a_freeze(time_env: Any) -> None:
    world, queue = FakeWorld(freeze=window()), f"q-{uuid.uuid4()}"
    running = TemporalActivities(load_platform(), client=time_env.client).running_operations
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=[*world.activities(), running]):
        report = await time_env.client.execute_workflow(
            "ScheduledRelease", ScheduledReleaseRequest(release=signed(release()), cron="0 3 * * *"),
            id="scheduled-shop@prod-1", task_queue=queue, result_type=ScheduledReleaseReport)
    assert report.outcome == "skipped" and "frozen by window 'release-party'" in report.detail
    assert "resolve_ref" not in world.calls and "apply_release" not in world.calls


async def test_a_raw_start_during_a_freeze_changes_nothing(harness: Harness) -> None:  # noqa: F811
    """Whoever can start workflows on the frontend, bypassing the CLI and its check: the
    workflow refuses itself, signed request or not, window or ad-hoc freeze, and nothing
    is written."""
    before = dict(harness.world.deployment)
    with harness.env.auto_time_skipping_disabled():  # the freeze must not run out meanwhile
        await frozen_by(harness, "carol")
        for req, why in ((signed(release(requested_by="dave")), "frozen by freeze@prod"),
                         (release(requested_by="dave"), "not signed"),
                         (signed(release(requested_by="dave", after_freeze=False, ref="v9")),
                          "frozen by freeze@prod")):
            handle = await harness.client.start_workflow(
                "ReleaseVersion", req, id="shop@prod", task_queue=harness.queue)
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            status = await handle.query("status", result_type=OperationStatus)
            assert why in status.error, status.error
        harness.world.freeze = window()
        await unfreeze(harness, "carol")  # the window alone now
        handle = await harness.client.start_workflow(
            "ReleaseVersion", signed(release(requested_by="dave")), id="shop@prod",
            task_queue=harness.queue)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    status = await handle.query("status", result_type=OperationStatus)
    assert status.refused and "window 'release-party'" in status.error
    assert "apply_release" not in harness.world.calls and harness.world.deployment == before


def test_a_cron_window_is_in_force_from_each_start_for_its_duration() -> None:
    """What the workflows compute at workflow.now(): a weekend freeze from Friday 18:00 UTC
    for 62 hours, and a year-end window that chains with it."""
    weekend = FreezeWindow(name="weekend", reason="no weekend releases", cron="0 18 * * fri",
                           duration=timedelta(hours=62))
    friday = datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc)  # a Friday
    assert weekend.active_at(friday - timedelta(minutes=1)) is None
    assert weekend.active_at(friday) == (friday, friday + timedelta(hours=62))
    assert weekend.active_at(friday + timedelta(hours=61, minutes=59))[1] == friday + timedelta(hours=62)
    assert weekend.active_at(friday + timedelta(hours=62)) is None  # Monday 08:00: open
    year_end = FreezeWindow(name="year-end", reason="year-end", start=friday + timedelta(hours=60),
                            end=friday + timedelta(days=5))
    config = EnvironmentFreeze(windows=[weekend, year_end])
    in_force = freeze_module.in_force(config, [], "prod", friday + timedelta(hours=1))
    assert in_force is not None and in_force.name == "weekend"
    # open only when both are over: the year-end window takes over before the weekend ends
    assert freeze_module.open_at(config, [], "prod", friday + timedelta(hours=1)) == \
        friday + timedelta(days=5)
    assert freeze_module.open_at(config, [], "prod", friday - timedelta(hours=1)) == \
        friday - timedelta(hours=1)


async def _stage(client: Any, workflow_id: str, prefix: str) -> OperationStatus:
    deadline = asyncio.get_running_loop().time() + 60  # a loaded machine: a generous deadline
    while True:
        status = await ops.status(client, workflow_id)
        if status.stage.startswith(prefix):
            return status
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never reached {prefix!r}; last {status.stage!r}")


async def test_a_train_is_refused_or_waits_for_the_end(time_env: Any) -> None:
    from tests.fakes.fleet import FleetWorld
    from tests.workflows.test_train import CHAIN, train

    world, queue = FleetWorld(freeze=window(length=timedelta(hours=2))), f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        refused = await ops.start(time_env.client, signed(train("prod", *CHAIN[:2])), queue)
        # time stands still meanwhile: a skip past the window's end would open prod
        with pytest.raises(WorkflowFailureError) as e, time_env.auto_time_skipping_disabled():
            await refused.handle.result()
        assert "prod is frozen by window 'release-party'" in str(e.value.cause)
        waiting = await ops.start(time_env.client, signed(
            train("prod", *CHAIN[:2]).model_copy(update={"after_freeze": True})), queue)
        await _stage(time_env.client, waiting.workflow_id, "waiting for freeze release-party")
        await time_env.sleep(timedelta(hours=1, minutes=1))
        await _stage(time_env.client, waiting.workflow_id, "awaiting approval")
        await waiting.handle.cancel()
    assert "apply_release" not in " ".join(world.calls)


def test_break_glass_is_notified_to_every_channel_whatever_the_routes() -> None:
    from kepler.notifications import NotificationsConfig

    config = NotificationsConfig.model_validate({
        "channels": {"ops": {"type": "log"}, "team": {"type": "log"}, "quiet": {"type": "log"}},
        "routes": [{"channels": ["ops"], "events": ["failed"]}]})
    assert config.channels_for("break_glass", "shop", "prod") == ["ops", "team", "quiet"]
    assert config.channels_for("succeeded", "shop", "prod") == []


async def test_a_break_glass_flag_does_not_carry_a_release_through_a_freeze_begun_after_its_check(
        harness: Harness) -> None:  # noqa: F811
    """A request flagged break-glass while prod was open takes the usual gate (one approver).
    A freeze begun while it waits refuses it at the recheck: its approvals were never a
    break-glass, so neither the flag nor them lets it through the emergency stop."""
    started = await harness.start(release(break_glass=True, reason="hotfix"))
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval.min_approvals == 1  # not a break-glass gate: prod was open
    with harness.env.auto_time_skipping_disabled():
        await frozen_by(harness, "dave")
    await harness.env.sleep(timedelta(minutes=1))  # past the recheck threshold
    assert await decide(harness.client, "shop", "prod", "alice") == "approved"
    with harness.env.auto_time_skipping_disabled():
        message = await failure_of(started)
    assert "prod is frozen by freeze@prod (by dave)" in message, message
    assert "apply_release" not in harness.world.calls
    assert not [n for n in harness.world.notes if n.event == "break_glass"]
