"""Runs Kepler never starts itself: a workflow of any Kepler type started with a retry
policy or a cron schedule is refused before its code runs (every type in the registry) (a retry or a cron run would
'continue' a first run the attacker chose). On the time-skipping server with the worker's
own interceptor and the fake world's activities: nothing is called."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

import workflows
from kepler.alerts import AlertActionRequest
from kepler.freeze import FreezeRequest
from kepler.jobs import RunJobRequest
from kepler.models import (
    CanaryRequest, CreateServiceRequest, DecommissionRequest, ReleaseRequest, RollbackRequest,
    ServiceSpec,
)
from kepler.contracts import OPERATIONS
from kepler.previews import PreviewRequest
from kepler.promotion import AutoPromotionRequest
from kepler.scale import ResourcesRequest, ScaleRequest
from kepler.schedules import ScheduledReleaseRequest
from kepler.train import TrainMember, TrainRequest
from tests.fakes.world import FakeWorld
from tests.helpers import signed
from workflows.common.starts import RefuseUnexpectedStarts


@pytest.fixture
async def world(time_env: Any) -> AsyncIterator[tuple[Any, FakeWorld, str]]:
    fake = FakeWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=fake.activities(), interceptors=[RefuseUnexpectedStarts()]):
        yield time_env.client, fake, queue


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
REQUESTS: dict[str, Any] = {
    "CreateService": lambda: signed(CreateServiceRequest(spec=ServiceSpec(name="shop", team="t"),
                                                         requested_by="carol")),
    "ReleaseVersion": lambda: signed(ReleaseRequest(service="shop", env="prod", ref="v1",
                                                    requested_by="carol")),
    "Rollback": lambda: signed(RollbackRequest(service="shop", env="prod", requested_by="carol")),
    "Canary": lambda: signed(CanaryRequest(service="shop", env="staging", ref="v2",
                                           requested_by="carol")),
    "Decommission": lambda: signed(DecommissionRequest(service="shop", requested_by="carol")),
    "RunJob": lambda: signed(RunJobRequest(service="shop", env="prod", requested_by="carol")),
    "AlertAction": lambda: AlertActionRequest(service="shop", env="prod", fingerprint="f",
                                              starts_at=NOW, requested_by="alerts"),
    "ReleaseTrain": lambda: signed(TrainRequest(name="t", env="prod", requested_by="carol",
                                                members=[TrainMember(service="shop", ref="v1")])),
    "Scale": lambda: signed(ScaleRequest(service="shop", env="prod", replicas=3,
                                         requested_by="carol")),
    "SetResources": lambda: signed(ResourcesRequest(service="shop", env="prod", cpu="200m",
                                                    requested_by="carol")),
    "ScheduledRelease": lambda: ScheduledReleaseRequest(release=signed(ReleaseRequest(
        service="shop", env="prod", ref="v1", requested_by="carol")), cron="0 3 * * *"),
    "AutoPromotion": lambda: AutoPromotionRequest(service="shop", source="staging", target="prod",
                                                  image="registry.local/shop@sha256:" + "a" * 64,
                                                  commit="abcdef1", since=NOW, release_id="r"),
    "Freeze": lambda: signed(FreezeRequest(env="prod", duration=timedelta(hours=1), reason="x",
                                           requested_by="carol")),
    "Preview": lambda: PreviewRequest(service="shop", mr=1),
}


def test_every_workflow_type_is_tried() -> None:
    assert sorted(REQUESTS) == sorted(o.workflow for o in OPERATIONS)


@pytest.mark.parametrize("kind", sorted(REQUESTS))
async def test_a_start_with_a_retry_policy_is_refused_before_anything(
        world: tuple[Any, FakeWorld, str], kind: str) -> None:
    client, fake, queue = world
    handle = await client.start_workflow(
        kind, REQUESTS[kind](), id=f"shop@{uuid.uuid4()}", task_queue=queue,
        retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)))
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert f"{kind} {handle.id} was started with a retry policy: Kepler never starts its " \
        "operations so" in str(e.value.cause)
    assert fake.calls == []
    history = [event async for event in handle.fetch_history_events()]
    assert sum(1 for ev in history if ev.HasField("workflow_execution_started_event_attributes")) == 1


@pytest.mark.e2e
async def test_a_start_with_a_cron_schedule_is_refused_before_anything(
        dev_env: Any, e2e_worker: None, platform_file: Any) -> None:
    """On the real dev server and worker (the time-skipping server does not run crons)."""
    from kepler.settings import load_platform

    client = dev_env.client
    queue = load_platform(platform_file).temporal.task_queue
    handle = await client.start_workflow(
        "ReleaseVersion", REQUESTS["ReleaseVersion"](), id=f"cron-{uuid.uuid4()}@prod",
        task_queue=queue, cron_schedule="@every 1s")
    try:
        from temporalio.client import WorkflowContinuedAsNewError
        with pytest.raises(WorkflowContinuedAsNewError):  # a cron run ends so, failed or not
            await handle.result(follow_runs=False)
        history = await handle.fetch_history()
        assert "was started with a cron schedule" in history.to_json()
        assert not any(ev.HasField("activity_task_scheduled_event_attributes") for ev in history.events)
    finally:
        await handle.terminate("test over")
