"""Decommission on the time-skipping server: approval, phase 1, soak, restore, phase 2,
refusals and failure reports. Kubernetes/Jenkins/GitLab are in-memory fakes with the real
activity names; the running-operations check is the real activity against the server."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
import copy
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, AsyncIterator

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows
from kepler import search_attributes as sa
from kepler.notifications import Notification
from activities.temporal import TemporalActivities
from kepler.decommission import (
    DecommissionReport, EnvTarget, Footprint, RestoreRequest, SchedulePause, TeardownRequest,
    TeardownResult,
)
from kepler.models import (
    DecommissionRequest, OperationStatus, ReleaseRequest,
)
from kepler.settings import load_platform
from kepler.clients import operations as ops
from tests.fakes.world import FakeWorld, replaced
from starter.canary import control_signer
from tests.helpers import decide, keep_history, signed

VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "shop", "labels": {"app": "shop"}},
      "spec": {"hosts": ["shop"], "http": [{"route": [{"destination": {"host": "shop", "subset": "stable"}, "weight": 100}]}]}}


@dataclass
class Cluster:
    vs: dict | None = field(default_factory=lambda: copy.deepcopy(VS))
    replicas: dict[str, int] = field(default_factory=lambda: {"shop": 3, "shop-canary": 0})
    objects: list[str] = field(default_factory=lambda: ["DestinationRule shop", "Service shop",
                                                        "ConfigMap shop-config", "Namespace"])


@dataclass
class Estate:
    clusters: dict[str, Cluster] = field(default_factory=lambda: {"prod": Cluster(), "staging": Cluster()})
    jenkins_job: bool = True
    gitlab: str = "active"  # active | archived | deleted
    jenkins_fails: bool = False
    teardown_fails_once: bool = False
    notes: list[Notification] = field(default_factory=list)
    # release schedules: prod's runs; staging's was paused by someone before (and stays theirs)
    schedules: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "release-shop@prod": {"paused": False, "note": ""},
        "release-shop@staging": {"paused": True, "note": "frozen by ops"}})

    def activities(self) -> list[Any]:
        estate = self

        def schedules_of(req: SchedulePause) -> dict[str, dict[str, Any]]:
            ids = [f"release-{req.service}@{env}" for env in req.envs]
            return {k: v for k, v in estate.schedules.items() if k in ids}

        @activity.defn(name="temporal.pause_schedules")
        async def pause_schedules(req: SchedulePause) -> list[str]:
            mine = [k for k, v in schedules_of(req).items() if not v["paused"] or v["note"] == req.note]
            for k in mine:
                estate.schedules[k] = {"paused": True, "note": req.note}
            return mine

        @activity.defn(name="temporal.unpause_schedules")
        async def unpause_schedules(req: SchedulePause) -> list[str]:
            mine = [k for k, v in schedules_of(req).items() if v["paused"] and v["note"] == req.note]
            for k in mine:
                estate.schedules[k] = {"paused": False, "note": ""}
            return mine

        @activity.defn(name="temporal.delete_schedules")
        async def delete_schedules(req: SchedulePause) -> TeardownResult:
            mine = list(schedules_of(req))
            for k in mine:
                del estate.schedules[k]
            return TeardownResult(deleted=[f"release schedule {k}" for k in mine])

        @activity.defn(name="kubernetes.record_footprint")
        async def record_footprint(t: EnvTarget) -> Footprint:
            c = estate.clusters[t.env]
            return Footprint(target=t, virtual_services=[copy.deepcopy(c.vs)] if c.vs else [],
                             replicas=dict(c.replicas))

        @activity.defn(name="istio.remove_routes")
        async def remove_routes(fp: Footprint) -> list[str]:
            estate.clusters[fp.target.env].vs = None
            return ["VirtualService shop"]

        @activity.defn(name="istio.restore_routes")
        async def restore_routes(fp: Footprint) -> list[str]:
            estate.clusters[fp.target.env].vs = copy.deepcopy(fp.virtual_services[0]) if fp.virtual_services else None
            return ["VirtualService shop"]

        @activity.defn(name="kubernetes.scale_down")
        async def scale_down(fp: Footprint) -> list[str]:
            c = estate.clusters[fp.target.env]
            c.replicas = {k: 0 for k in c.replicas}
            return list(c.replicas)

        @activity.defn(name="kubernetes.scale_restore")
        async def scale_restore(fp: Footprint) -> list[str]:
            estate.clusters[fp.target.env].replicas = dict(fp.replicas)
            return list(fp.replicas)

        @activity.defn(name="kubernetes.teardown")
        async def teardown(r: TeardownRequest) -> TeardownResult:
            if estate.teardown_fails_once:
                estate.teardown_fails_once = False
                raise ApplicationError("cluster unreachable: ConnectError")  # retryable
            c = estate.clusters[r.target.env]
            mine = [o for o in c.objects if (o.startswith("DestinationRule") == (r.part == "istio"))]
            c.objects = [o for o in c.objects if o not in mine]
            if r.part == "kubernetes":
                mine += [f"Deployment {d}" for d in c.replicas]
                c.replicas = {}
            return TeardownResult(deleted=[f"{r.target.env}: {o}" for o in mine])

        @activity.defn(name="kubernetes.inventory")
        async def inventory(t: EnvTarget) -> list[str]:
            return [f"{t.env}: {o}" for o in estate.clusters[t.env].objects]

        @activity.defn(name="jenkins.delete_job")
        async def delete_job(service: str) -> bool:
            if estate.jenkins_fails:
                raise ApplicationError("Jenkins: HTTP 403", type="Unauthorized", non_retryable=True)
            existed, estate.jenkins_job = estate.jenkins_job, False
            return existed

        @activity.defn(name="gitlab.archive_project")
        async def archive_project(service: str) -> None:
            estate.gitlab = "archived"

        @activity.defn(name="notify")
        async def notify(n: Notification) -> list[str]:
            estate.notes.append(n)
            return ["test"]

        return [pause_schedules, unpause_schedules, delete_schedules, record_footprint, remove_routes, restore_routes, scale_down, scale_restore,
                teardown, inventory, delete_job, archive_project, notify]


class Harness:
    def __init__(self, client: Any, estate: Estate, queue: str) -> None:
        self.client, self.estate, self.queue = client, estate, queue

    async def start(self, by: str = "carol", soak: timedelta = timedelta(hours=24)) -> ops.Started:
        return await ops.start(self.client, signed(DecommissionRequest(
            service="shop", requested_by=by, reason="replaced by shop2", soak=soak)), self.queue)

    async def wait_stage(self, started: ops.Started, stage: str, timeout: float = 10) -> OperationStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await started.handle.query("status", result_type=OperationStatus)
            if status.stage == stage:
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"stage {stage!r} never reached; last {status.stage!r}")
            await asyncio.sleep(0.05)

    async def approve(self, who: str = "alice") -> str:
        return await decide(self.client, "shop", "all", who)


@asynccontextmanager
async def running(time_env: Any, estate: Estate, platform: Any = None) -> AsyncIterator[Harness]:
    """A worker with the estate's activities and the real plan from `platform`."""
    queue = f"q-{uuid.uuid4()}"
    fakes = replaced(FakeWorld().activities(), drop=("notify",))
    ops_acts = TemporalActivities(platform or load_platform(), client=time_env.client)
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=[*fakes, *estate.activities(), ops_acts.decommission_plan,
                                  ops_acts.running_operations]):
        yield Harness(time_env.client, estate, queue)


@pytest.fixture
async def harness(time_env) -> AsyncIterator[Harness]:
    async with running(time_env, Estate()) as h:
        yield h


async def failure_of(started: ops.Started) -> str:
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    return str(e.value.cause)


async def test_approved_decommission_soaks_then_deletes_and_archives(harness: Harness) -> None:
    started = await harness.start()
    assert started.workflow_id == "shop@all"
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval and status.pending_approval.approvers == ["alice", "bob"]
    assert harness.estate.clusters["prod"].replicas["shop"] == 3  # nothing before approval
    with pytest.raises(ops.Refused, match="four eyes"):
        await harness.approve("carol")
    assert await harness.approve("alice") == "approved"
    status = await harness.wait_stage(started, "soaking")
    assert status.outcome == "soaking"
    attrs = (await started.handle.describe()).typed_search_attributes  # what the UI filters on
    assert (attrs.get(sa.STAGE), attrs.get(sa.OUTCOME)) == ("soaking", "soaking")
    for c in harness.estate.clusters.values():
        assert c.vs is None and c.replicas == {"shop": 0, "shop-canary": 0}
    assert harness.estate.jenkins_job and harness.estate.gitlab == "active"
    assert all(s["paused"] for s in harness.estate.schedules.values())  # no fire in the soak

    report = await started.handle.result()  # the server skips the 24 h soak
    assert report.outcome == "succeeded"
    assert harness.estate.jenkins_job is False
    assert harness.estate.gitlab == "archived"  # archived, never deleted
    assert all(c.objects == [] and c.replicas == {} for c in harness.estate.clusters.values())
    assert "prod: Deployment shop" in report.deleted and "Jenkins job kepler-shop" in report.deleted
    assert harness.estate.schedules == {}  # the service's schedules go with it
    assert "release schedule release-shop@prod" in report.deleted
    events = [n.event for n in harness.estate.notes]
    assert events == ["started", "awaiting_approval", "soaking", "decommissioned"]
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "succeeded" and any(n.startswith("deleted: ") for n in status.notes)
    attrs = (await started.handle.describe()).typed_search_attributes
    assert (attrs.get(sa.STAGE), attrs.get(sa.OUTCOME)) == ("done", "succeeded")
    await keep_history(harness.client, "decommission", started.workflow_id)


async def test_restore_during_soak_undoes_phase_one_exactly(harness: Harness) -> None:
    before = copy.deepcopy(harness.estate.clusters)
    schedules_before = copy.deepcopy(harness.estate.schedules)
    started = await harness.start()
    await harness.wait_stage(started, "awaiting approval")
    with pytest.raises(ops.Refused, match="nothing to restore"):  # not soaking yet
        await restore(harness.client, "carol")
    await harness.approve("bob")
    await harness.wait_stage(started, "soaking")
    with pytest.raises(ops.Refused, match="mallory may not restore shop"):
        await restore(harness.client, "mallory")
    with pytest.raises(ops.Refused, match="restore: unsigned"):  # a typed name proves nothing
        await ops.restore(harness.client, "shop", RestoreRequest(requested_by="carol"))
    answer = await restore(harness.client, "carol", "still used")
    assert answer.startswith("restored shop: ")
    assert harness.estate.clusters == before  # routes and replica counts, exactly
    # prod's schedule runs again; staging's, paused by someone else before, stays paused
    assert harness.estate.schedules == schedules_before
    report = await started.handle.result()
    assert report.outcome == "restored" and report.restored_by == "carol"
    assert harness.estate.jenkins_job and harness.estate.gitlab == "active"
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "restored" and "restored by carol: still used" in status.notes
    with pytest.raises(ops.Refused):
        await restore(harness.client, "carol")
    await keep_history(harness.client, "decommission-signed-restore", started.workflow_id)


async def restore(client: Any, by: str, reason: str = "") -> str:
    """As `kepler restore shop --as BY` sends it: signed by BY for the soaking run."""
    return await ops.restore(client, "shop", RestoreRequest(requested_by=by, reason=reason),
                             control_signer(load_platform(), by))


async def test_refused_while_a_release_of_the_service_runs(harness: Harness) -> None:
    release = await ops.start(harness.client, signed(ReleaseRequest(
        service="shop", env="prod", ref="v1", requested_by="dev")), harness.queue)
    deadline = asyncio.get_running_loop().time() + 10
    while (await release.handle.query("status", result_type=OperationStatus)).stage != "awaiting approval":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    started = await harness.start()
    message = await failure_of(started)
    assert "refused: shop@prod is busy: release v1@" in message and "started by dev" in message
    assert harness.estate.clusters["prod"].replicas["shop"] == 3 and harness.estate.clusters["prod"].vs
    await release.handle.cancel()


async def test_release_refused_while_decommission_runs(harness: Harness) -> None:
    started = await harness.start(by="carol")
    await harness.wait_stage(started, "awaiting approval")
    with pytest.raises(ops.Refused, match="shop@all is busy: decommission started by carol"):
        await ops.start(harness.client, ReleaseRequest(service="shop", env="prod", ref="v2",
                                                       requested_by="dave"), harness.queue)
    with pytest.raises(ops.Refused, match="shop@all is busy"):
        await harness.start(by="dave")
    await started.handle.cancel()


async def test_rejection_changes_nothing(harness: Harness) -> None:
    before = copy.deepcopy(harness.estate.clusters)
    started = await harness.start()
    await harness.wait_stage(started, "awaiting approval")
    await decide(harness.client, "shop", "all", "alice", "reject", "still has traffic")
    assert "rejected by alice: still has traffic" in await failure_of(started)
    assert harness.estate.clusters == before
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "rejected"


async def test_cancel_during_soak_restores(harness: Harness) -> None:
    before = copy.deepcopy(harness.estate.clusters)
    started = await harness.start()
    await harness.wait_stage(started, "awaiting approval")
    await harness.approve()
    await harness.wait_stage(started, "soaking")
    await started.handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    assert harness.estate.clusters == before
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "cancelled" and len(status.undone) == 3
    assert "release schedules resumed" in status.undone
    assert harness.estate.schedules["release-shop@prod"] == {"paused": False, "note": ""}


async def test_a_soak_under_the_platform_minimum_is_refused_before_anything(harness: Harness) -> None:
    """A raw start (no CLI to refuse it) with a 30 s soak: refused by the workflow itself."""
    before = copy.deepcopy(harness.estate.clusters)
    started = await harness.start(soak=timedelta(seconds=30))
    message = await failure_of(started)
    assert "soak: 0:00:30 is under the platform's minimum of 0:01:00" in message
    assert harness.estate.clusters == before and harness.estate.jenkins_job
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "failed" and status.pending_approval is None


async def test_phase_two_failure_is_retried_and_reported(harness: Harness) -> None:
    harness.estate.teardown_fails_once = True   # transient: retried, then fine
    harness.estate.jenkins_fails = True         # permanent: reported
    started = await harness.start(soak=timedelta(minutes=10))
    await harness.wait_stage(started, "awaiting approval")
    await harness.approve()
    message = await failure_of(started)
    assert "phase 2 incomplete after retries: delete Jenkins job: Jenkins: HTTP 403" in message
    assert "deleted: prod: DestinationRule shop" in message
    assert "remains: Jenkins job kepler-shop" in message
    assert harness.estate.gitlab == "archived"  # the other steps still ran
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "failed"
    assert "remains: Jenkins job kepler-shop" in status.notes
    assert any(n.event == "failed" for n in harness.estate.notes)


async def test_an_incomplete_restore_says_what_was_put_back_and_what_was_not(time_env) -> None:
    """prod refuses to scale back: the restore ends failed, naming staging as put back
    and prod as not (it used to say 'undone: nothing')."""
    class PartlyBroken(Estate):
        def activities(self) -> list[Any]:
            @activity.defn(name="kubernetes.scale_restore")
            async def scale_restore(fp: Footprint) -> list[str]:
                if fp.target.env == "prod":
                    raise ApplicationError("forbidden", type="Unauthorized", non_retryable=True)
                self.clusters[fp.target.env].replicas = dict(fp.replicas)
                return list(fp.replicas)
            return replaced(super().activities(), scale_restore)

    async with running(time_env, PartlyBroken()) as harness:
        started = await harness.start()
        await harness.wait_stage(started, "awaiting approval")
        await harness.approve("alice")
        await harness.wait_stage(started, "soaking")
        with pytest.raises(ops.Refused, match="restore did not complete"):
            await restore(time_env.client, "carol")
        message = await failure_of(started)
        status = await started.handle.query("status", result_type=OperationStatus)
    assert status.outcome == "failed"
    assert "undone: staging: replicas and routes back" in message
    assert "NOT put back: prod: replicas and routes back" in message and "forbidden" in message


async def test_with_the_docker_builder_phase_two_never_calls_jenkins(time_env) -> None:
    estate = Estate()
    platform = load_platform().model_copy(update={"builder": "docker"})
    async with running(time_env, estate, platform) as harness:
        started = await harness.start()
        await harness.wait_stage(started, "awaiting approval")
        await harness.approve("alice")
        report = await started.handle.result()
        status = await started.handle.query("status", result_type=OperationStatus)
    assert report.outcome == "succeeded"
    assert estate.jenkins_job is True  # never touched (there is none to delete)
    assert any(s.name == "delete Jenkins job" and s.outcome == "skipped" for s in status.steps)
