"""Scale and SetResources on the time-skipping server: bounds, undo, and an override
that survives the next release and a rollback."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator

import pytest
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

import workflows
from kepler import scale as sc
from kepler.models import OperationStatus, ReleaseRequest
from kepler.spec import Resources
from kepler.scale import ResourcesRequest, ScaleReport, ScaleRequest
from kepler.settings import Bounds
from kepler.clients import operations as ops
from tests.fakes.fleet import FleetWorld
from tests.helpers import decide, keep_history, signed


@pytest.fixture
async def world(time_env) -> AsyncIterator[tuple[Any, FleetWorld, str]]:
    w = FleetWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=w.activities()):
        yield time_env.client, w, queue


async def run(client: Any, queue: str, req: Any) -> Any:
    return await (await ops.start(client, req, queue)).handle.result()


async def test_scale_persists_into_the_next_release_and_reset_goes_back_to_the_spec(world) -> None:
    client, w, queue = world
    report: ScaleReport = await run(client, queue, ScaleRequest(
        service="shop", env="staging", replicas=5, requested_by="carol", reason="sale"))
    assert (report.previous_replicas, report.replicas, report.override.replicas) == (2, 5, 5)
    assert w.deployments["shop"]["annotations"][sc.REPLICAS] == "5"
    status = await ops.status(client, "shop@staging")
    assert status.operation.value == "scale" and status.version == "5 replicas"
    assert status.requested_by == "carol" and status.outcome == "succeeded"
    await keep_history(client, "sealed-scale", "shop@staging")  # scale.json: from before

    await run(client, queue, ReleaseRequest(service="shop", env="staging", ref="v2", requested_by="carol"))
    assert w.deployments["shop"]["replicas"] == 5  # the spec says 2; the override stands
    assert w.deployments["shop"]["image"].startswith("reg/demo/shop@sha256:")

    await run(client, queue, ScaleRequest(service="shop", env="staging", reset=True, requested_by="carol"))
    assert w.deployments["shop"]["replicas"] == 2
    assert sc.REPLICAS not in w.deployments["shop"]["annotations"]


async def test_resources_persist_into_the_next_release(world) -> None:
    client, w, queue = world
    report = await run(client, queue, ResourcesRequest(
        service="shop", env="staging", cpu="500m", memory="512Mi", requested_by="carol"))
    wanted = Resources(cpu_request="500m", memory_request="512Mi", cpu_limit="500m",
                       memory_limit="512Mi")
    assert report.resources == wanted and report.previous_resources == Resources()
    await keep_history(client, "sealed-set-resources", "shop@staging")  # set-resources.json: before
    await run(client, queue, ReleaseRequest(service="shop", env="staging", ref="v2", requested_by="carol"))
    assert w.deployments["shop"]["resources"] == wanted
    await run(client, queue, ResourcesRequest(service="shop", env="staging", reset=True,
                                              requested_by="carol"))
    assert w.deployments["shop"]["resources"] == Resources()


async def test_over_the_bounds_is_refused_before_any_change(world) -> None:
    client, w, queue = world
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ScaleRequest(service="shop", env="staging", replicas=21,
                                              requested_by="carol"))
    assert "replicas: 21 is over this environment's maximum of 20" in str(e.value.cause)
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ResourcesRequest(service="shop", env="staging", memory="16Gi",
                                                  requested_by="carol"))
    assert "memory request: 16Gi is over this environment's maximum of 8Gi" in str(e.value.cause)
    assert ("overrides", "shop") not in w.events
    assert (await ops.status(client, "shop@staging")).outcome == "failed"


async def test_a_failed_rollout_puts_replicas_resources_and_annotations_back(world) -> None:
    client, w, queue = world
    await run(client, queue, ScaleRequest(service="shop", env="staging", replicas=3, requested_by="carol"))
    w.crash.add("shop")
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ResourcesRequest(service="shop", env="staging", cpu="1",
                                                  requested_by="carol"))
    assert "CrashLoopBackOff" in str(e.value.cause) and "undone: back to 3 replicas" in str(e.value.cause)
    d = w.deployments["shop"]
    assert d["resources"] == Resources() and d["replicas"] == 3
    assert d["annotations"].get(sc.REPLICAS) == "3" and sc.RESOURCES not in d["annotations"]
    status: OperationStatus = await ops.status(client, "shop@staging")
    assert status.outcome == "rolled_back" and status.operation.value == "resources"


async def test_a_service_without_a_deployment_is_refused(world) -> None:
    client, _, queue = world
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ScaleRequest(service="ghost", env="staging", replicas=1,
                                              requested_by="carol"))
    assert "ghost has no Deployment in staging" in str(e.value.cause)


def test_requests_and_bounds_are_checked_in_the_models() -> None:
    with pytest.raises(ValidationError, match="give a number of replicas, or reset"):
        ScaleRequest(service="shop", env="staging", requested_by="carol")
    with pytest.raises(ValidationError, match="Kubernetes quantity"):
        ResourcesRequest(service="shop", env="staging", cpu="lots", requested_by="carol")
    r = ResourcesRequest(service="shop", env="staging", cpu="2", requested_by="carol").applied_to(Resources())
    assert (r.cpu_request, r.cpu_limit) == ("2", "2")  # a limit follows a request above it
    assert sc.bounds_problems(Bounds(max_cpu="1500m"), None, r) == [
        "cpu request: 2 is over this environment's maximum of 1500m",
        "cpu limit: 2 is over this environment's maximum of 1500m"]
    assert sc.request_problems(Resources(cpu_request="2", cpu_limit="1")) == [
        "cpu: the request 2 is over the limit 1"]


async def test_in_prod_a_scale_is_signed_approved_and_the_write_carries_its_approvals(world) -> None:
    """prod requires approval: the scale waits at the gate (which names the image running
    there and what changes), the requester cannot approve it, and the write carries the
    run's signed request and approval for the activity to check again."""
    client, w, queue = world
    written: list[Any] = []
    w.on_overrides = written.append
    started = await ops.start(client, signed(ScaleRequest(
        service="shop", env="prod", replicas=4, requested_by="carol", reason="peak")), queue)
    status = await until(client, "shop@prod", lambda s: s.pending_approval is not None)
    assert status.pending_approval.digests == [w.deploy("shop")["image"]]
    assert ("overrides", "shop") not in w.events and w.deployments["shop"]["replicas"] == 2
    with pytest.raises(ops.Refused, match="four eyes"):
        await decide(client, "shop", "prod", "carol")
    await decide(client, "shop", "prod", "alice")
    report = await started.handle.result()
    assert (report.outcome, report.replicas) == ("succeeded", 4)
    (change,) = written
    assert change.authorization.request.statement.operation == "scale"
    assert [a.statement.run_id for a in change.authorization.approvals] == [started.run_id]
    await keep_history(client, "scale-approved-in-prod", "shop@prod")


async def test_under_the_minimum_is_refused_before_any_change(world) -> None:
    client, w, queue = world
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ScaleRequest(service="shop", env="staging", replicas=0,
                                              requested_by="carol"))
    assert "replicas: 0 is under this environment's minimum of 1" in str(e.value.cause)
    with pytest.raises(WorkflowFailureError) as e:
        await run(client, queue, ResourcesRequest(service="shop", env="staging", memory="1Mi",
                                                  memory_limit="1Mi", requested_by="carol"))
    assert "memory request: 1Mi is under this environment's minimum of 32Mi" in str(e.value.cause)
    assert ("overrides", "shop") not in w.events
    assert (await ops.status(client, "shop@staging")).bad_input


async def until(client: Any, workflow_id: str, check: Any) -> OperationStatus:
    """The operation's status once `check` holds (the activities are in memory: quick)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status = await ops.status(client, workflow_id)
        if check(status):
            return status
        assert asyncio.get_running_loop().time() < deadline, f"never reached; last {status}"
        await asyncio.sleep(0.05)
