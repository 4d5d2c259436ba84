"""ScheduledRelease on the time-skipping server: a fire releases like a manual release,
and is skipped, saying why, whenever a manual release would be refused."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.service import RPCError
from temporalio.worker import Worker

import pytest

import workflows
from activities.temporal import TemporalActivities
from kepler.models import ApprovalDecision, ReleaseRequest
from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
from kepler.settings import load_platform
from tests.fakes.sample_workflows import SleepsADay
from tests.fakes.world import FakeWorld


async def fire(client: Any, queue: str) -> ScheduledReleaseReport:
    return await client.execute_workflow(
        "ScheduledRelease", ScheduledReleaseRequest(release=ReleaseRequest(
            service="shop", env="staging", ref="main", requested_by="carol"), cron="0 2 * * *"),
        id=f"scheduled-shop@staging-{uuid.uuid4()}", task_queue=queue,
        result_type=ScheduledReleaseReport)


async def test_a_fire_during_a_service_wide_operation_is_skipped_and_says_why(time_env: Any) -> None:
    world, queue = FakeWorld(), f"q-{uuid.uuid4()}"
    running = TemporalActivities(load_platform(), client=time_env.client).running_operations
    async with Worker(time_env.client, task_queue=queue, workflows=[*workflows.ALL, SleepsADay],
                      activities=[*world.activities(), running]):
        # stands for a decommission soaking under shop@all (real time: no day skipped)
        with time_env.auto_time_skipping_disabled():
            holder = await time_env.client.start_workflow(
                SleepsADay.run, ApprovalDecision(approver="x"), id="shop@all", task_queue=queue)
            report = await fire(time_env.client, queue)
            assert report.outcome == "skipped" and "shop@all is busy" in report.detail, report
            with pytest.raises(RPCError):  # no release was started
                await time_env.client.get_workflow_handle("shop@staging").describe()
            assert "apply_release" not in world.calls
            await holder.terminate()
        told = [n for n in world.notes if n.event == "skipped"]  # a skip is told, like any end
        assert len(told) == 1 and "shop@all is busy" in told[0].text, world.notes

        report = await fire(time_env.client, queue)  # nothing holds the service any more
        assert report.outcome == "succeeded" and report.release_id == "shop@staging"


async def test_a_fire_runs_in_the_lifecycle_and_a_release_is_told_once(time_env: Any) -> None:
    """A fire that released leaves the telling to the release (one notification of its
    ending, not two); its status is an operation's status, with its steps."""
    from kepler.clients import operations as ops
    from kepler.contracts import SCHEDULED_REPORT, STATUS

    world, queue = FakeWorld(), f"q-{uuid.uuid4()}"
    running = TemporalActivities(load_platform(), client=time_env.client).running_operations
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=[*world.activities(), running]):
        fire_id = f"scheduled-shop@staging-{uuid.uuid4()}"
        report = await time_env.client.execute_workflow(
            "ScheduledRelease", ScheduledReleaseRequest(release=ReleaseRequest(
                service="shop", env="staging", ref="main", requested_by="carol"), cron="0 2 * * *"),
            id=fire_id, task_queue=queue, result_type=ScheduledReleaseReport)
        assert report.outcome == "succeeded"
        assert [n.event for n in world.notes] == ["succeeded"], world.notes  # the release's
        handle = time_env.client.get_workflow_handle(fire_id)
        status = await ops.query(handle, STATUS)
        assert status.operation.value == "scheduled-release" and status.outcome == "succeeded"
        assert status.stage == "done"
        assert "read the freeze windows" in [s.name for s in status.steps]
        assert (await ops.query(handle, SCHEDULED_REPORT)).release_id == "shop@staging"
