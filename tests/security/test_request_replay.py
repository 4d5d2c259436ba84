"""Attacks with signed requests read from history (issue 26, item 5): whoever can start
workflows on the Temporal frontend starts one again, or one signed long ago. On the real
dev server (its visibility is where the worker finds the runs a request already started),
with the fake world's other activities: each is refused naming the rule, and nothing
changed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from activities.temporal import TemporalActivities
from kepler.clients import freezes as freeze_client
from kepler.freeze import FreezeReport, FreezeRequest
from kepler.models import CreateServiceRequest, ReleaseReport, ReleaseRequest
from kepler.settings import load_platform
from kepler.spec import ServiceSpec
from tests.fakes.world import FakeWorld, replaced
from tests.helpers import signed

CHANGES = ("apply_release", "apply_objects", "set_routes", "scale", "ensure_project")


@pytest.fixture
async def world(dev_env: Any) -> AsyncIterator[tuple[Any, FakeWorld, str]]:
    fake = FakeWorld(temporal=dev_env.client)
    queue = f"q-{uuid.uuid4()}"
    real = TemporalActivities(load_platform(), client=dev_env.client)
    async with Worker(dev_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=replaced(fake.activities(), real.request_used,
                                          real.running_operations)):
        yield dev_env.client, fake, queue


def changed(fake: FakeWorld) -> list[str]:
    return [c for c in fake.calls if c.split()[0] in CHANGES]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"  # the dev server lives for the whole session


async def listed(client: Any, workflow_id: str, run_id: str | None) -> None:
    """Wait until the dev server's visibility lists the run (it is written after the run
    starts, and a loaded machine can delay it by seconds): the single-use check finds a
    request's earlier runs there, and an attacker replays a request read from a run's
    history, which is listed by then."""
    from tests.workers import wait_for

    async def seen() -> bool:
        query = f"WorkflowId = '{workflow_id}' AND RunId = '{run_id}'"
        return bool([run async for run in client.list_workflows(query)])
    await wait_for(seen, timeout=60, what=f"run {run_id} of {workflow_id} listed", interval=0.1)


async def refusal(client: Any, workflow: str, req: Any, workflow_id: str, queue: str,
                  result_type: type) -> str:
    with pytest.raises(WorkflowFailureError) as e:
        await client.execute_workflow(workflow, req, id=workflow_id, task_queue=queue,
                                      result_type=result_type)
    return str(e.value.cause)


async def test_a_release_request_started_again_is_refused(world: tuple[Any, FakeWorld, str]) -> None:
    """The same signed request, started again once its run has ended: refused naming the
    run that used it, before anything is built or applied."""
    client, fake, queue = world
    service = unique("shop")
    req = signed(ReleaseRequest(service=service, env="staging", ref="v1", requested_by="carol"))
    first = await client.start_workflow("ReleaseVersion", req, id=f"{service}@staging",
                                        task_queue=queue, result_type=ReleaseReport)
    assert (await first.result()).outcome == "succeeded"  # a fresh request works
    before = list(fake.calls)
    await listed(client, f"{service}@staging", first.result_run_id)
    why = await refusal(client, "ReleaseVersion", req, f"{service}@staging", queue, ReleaseReport)
    assert f"already used by run {first.result_run_id}" in why and "sign a new one" in why
    # only the reads made before the request is verified: the policy, and the freeze beside it
    assert sorted(fake.calls[len(before):]) == ["active_freeze staging", "policy"], fake.calls[len(before):]


async def test_an_old_create_re_committing_its_spec_is_refused(world: tuple[Any, FakeWorld, str]) -> None:
    """CreateService with a request signed an hour ago (read from an old run's history):
    its old spec is not committed over the current one."""
    client, fake, queue = world
    service = unique("shop")
    hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    req = signed(CreateServiceRequest(spec=ServiceSpec(name=service, team="growth"),
                                      requested_by="carol"), at=hour_ago)
    why = await refusal(client, "CreateService", req, f"{service}@all", queue, ReleaseReport)
    assert "a request may start a run for 0:15:00 after signing" in why, why
    assert "identity.request_valid_for" in why
    assert changed(fake) == [] and fake.created == []


async def test_a_freeze_of_prod_restarted_from_history_is_refused(world: tuple[Any, FakeWorld, str]) -> None:
    """The issue's example: an ad-hoc freeze of prod, cancelled, started again with its
    own signed request (up to 7 days of freeze, again and again): refused, and prod is
    not frozen."""
    client, fake, queue = world
    req = signed(FreezeRequest(env="prod", duration=timedelta(days=7), reason="incident",
                               requested_by="carol"))
    first = await client.start_workflow("Freeze", req, id="freeze@prod", task_queue=queue,
                                        result_type=FreezeReport)
    for _ in range(200):  # until it is in force, within 10 s
        if await freeze_client.adhoc_freezes(client, "prod"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the first freeze never came into force")
    await first.cancel()
    with pytest.raises(WorkflowFailureError):
        await first.result()
    await listed(client, "freeze@prod", first.result_run_id)
    why = await refusal(client, "Freeze", req, "freeze@prod", queue, FreezeReport)
    assert f"already used by run {first.result_run_id}" in why, why
    assert await freeze_client.adhoc_freezes(client, "prod") == []
