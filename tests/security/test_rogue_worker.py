"""The attacker who may start workflows may also poll a task queue of their own: a rogue
workflow there (named like Kepler's own, ReleaseVersion and Canary) schedules each of
Kepler's writing activities on Kepler's queue with crafted payloads, or continues-as-new
onto Kepler's queue as a Canary carrying a state of its choosing. Against the real dev
server, the real Kepler worker and the sandbox: every call is refused by the worker
(`Unauthorized`, naming the rule), and the world is as it was."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.workloads import DeploymentActivities
    from kepler import manifests, naming
    from kepler.canary import CanaryReport, CanaryState
    from kepler.decommission import EnvTarget, Footprint
    from kepler.models import CanaryProgress, CanaryRequest, ReleaseRequest
    from kepler.settings import ApprovalPolicy, Bounds, Platform, load_platform
    from kepler.spec import ServiceSpec
    from kepler.payloads import (
        AdoptedObject, ApplyObjects, ApplyRelease, Authorization, DeployRelease, EnvironmentPolicy,
        ReleaseRecord,
        ReleaseSnapshot, ReleaseTarget, RecordRelease, RouteWeights, ScaleDeployment, UndoCreated,
    )
    from tests import world
    from tests.helpers import signed

pytestmark = pytest.mark.e2e

SERVICE, NS = "rogue-target", "rogue-target-prod"
EVIL = "evil.example/miner@sha256:" + "e" * 64
TARGET = ReleaseTarget(env="prod", namespace=NS, service=SERVICE)


CALLS: list[tuple[str, Any]] = []  # made before the rogue runs (signing is I/O)


def crafted_calls() -> list[tuple[str, Any]]:
    """Each writing activity of Kepler's, with what an attacker would send it."""
    spec = ServiceSpec(name=SERVICE, team="t", replicas=1)
    request = signed(ReleaseRequest(service=SERVICE, env="prod", ref="main", requested_by="carol"))
    evil_sa = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "evil", "namespace": NS, "labels": {"app": SERVICE}}}
    footprint = Footprint(target=EnvTarget(env="prod", namespace=NS, service=SERVICE),
                          replicas={SERVICE: 0}, seal="0" * 64)
    return [
        ("kubernetes.apply_release", ApplyRelease(
            target=TARGET, image=EVIL, replicas=1, config={"evil": "1"}, resources=spec.resources,
            annotations={}, authorization=Authorization(request=request.signed))),
        ("kubernetes.apply_release", ApplyRelease(  # staging's policy, prod's namespace
            target=TARGET.model_copy(update={"env": "staging"}), image=EVIL, replicas=1,
            config={}, resources=spec.resources, annotations={})),
        ("kubernetes.deploy_release", DeployRelease(release=ApplyRelease(
            target=TARGET, image=EVIL, replicas=1, config={"evil": "1"}, resources=spec.resources,
            annotations={}, authorization=Authorization(request=request.signed)),
            timeout=timedelta(minutes=1), record=ReleaseRecord(
                image=EVIL, at=datetime.now(timezone.utc), release_id=f"{SERVICE}@prod/x"))),
        ("kubernetes.restore_release", ReleaseSnapshot(
            target=TARGET, exists=True, image=EVIL, replicas=3, config={"evil": "1"})),
        ("kubernetes.record_release", RecordRelease(target=TARGET, record=ReleaseRecord(
            image=EVIL, at=datetime.now(timezone.utc), release_id=f"{SERVICE}@prod/x"))),
        ("kubernetes.apply_objects", ApplyObjects(env="prod", manifests=[evil_sa], run_id="r-evil")),
        ("kubernetes.restore_adopted", AdoptedObject(
            env="prod", kind="Service", namespace=NS, name=SERVICE, labels={"evil": "1"})),
        ("kubernetes.delete_if_created", UndoCreated(
            service=SERVICE, run_id="r0", env="prod", kind="Deployment", namespace=NS, name=SERVICE)),
        ("kubernetes.scale", ScaleDeployment(target=TARGET, replicas=0)),
        ("kubernetes.scale_down", footprint),
        ("istio.set_routes", RouteWeights(env="prod", namespace=NS, service=SERVICE, stable=0,
                                          canary=100)),
        ("istio.remove_routes", footprint),
        ("promotion.sign_request", request),
        ("authority.seal", crafted_state(NS)),
    ]


def crafted_state(namespace: str) -> CanaryState:
    now = datetime.now(timezone.utc)
    return CanaryState(
        progress=CanaryProgress(weights=[100], interval=timedelta(seconds=10), failure_limit=1),
        # staging's policy (no approval), prod's namespace, the platform's public signers
        policy=EnvironmentPolicy(env="staging", namespace=namespace, approval=ApprovalPolicy(),
                                 rollback_approval=ApprovalPolicy(), bounds=Bounds(),
                                 bake_time=timedelta(0), rollout_timeout=timedelta(minutes=1),
                                 signers=load_platform().signers()),
        spec=ServiceSpec(name=SERVICE, team="t"), commit="e" * 40, version="evil", image=EVIL,
        previous_image="", started_at=now, deadline=now + timedelta(days=1))


@workflow.defn(name="ReleaseVersion", sandboxed=False)
class RogueRelease:
    """Named like Kepler's release, on the attacker's own queue."""

    @workflow.run
    async def run(self, kepler_queue: str) -> list[str]:
        outcomes = []
        for name, arg in CALLS:
            try:
                await workflow.execute_activity(
                    name, arg, task_queue=kepler_queue, start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1))
                outcomes.append(f"{name}: ran")
            except ActivityError as e:
                cause = e.cause
                kind = cause.type if isinstance(cause, ApplicationError) else type(cause).__name__
                outcomes.append(f"{name}: {kind}: {cause}")
        return outcomes


@workflow.defn(name="Canary", sandboxed=False)
class RogueCanary:
    """Continues as new onto Kepler's queue: Kepler's Canary of staging then starts as a
    continued run with the attacker's state (any image, staging's policy, prod's namespace)."""

    @workflow.run
    async def run(self, req: CanaryRequest, kepler_queue: str) -> CanaryReport:
        workflow.continue_as_new(args=[req, crafted_state(NS)], task_queue=kepler_queue)


@pytest.fixture(scope="module")
def target(sandbox: Any, platform_file: Any) -> Platform:
    """A service's prod objects, laid down as `service create` would."""
    platform = load_platform(platform_file)
    spec = ServiceSpec(name=SERVICE, team="t", replicas=1)
    ActivityEnvironment().run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="prod", manifests=manifests.for_environment(spec, "prod", NS), run_id="r0"))
    return platform


async def test_a_rogue_workflow_on_its_own_queue_gets_no_write(
        dev_env: Any, e2e_worker: None, target: Platform, sandbox: Any) -> None:
    client: Client = dev_env.client
    kepler_queue = target.temporal.task_queue
    rogue_queue = f"rogue-{uuid.uuid4()}"
    before = world.snapshot(sandbox, [NS])
    CALLS[:] = crafted_calls()
    async with Worker(client, task_queue=rogue_queue, workflows=[RogueRelease]):
        outcomes = await client.execute_workflow(
            "ReleaseVersion", kepler_queue, id=f"{SERVICE}@prod-{uuid.uuid4()}",
            task_queue=rogue_queue, result_type=list[str])
    assert len(outcomes) == len(CALLS)
    for line in outcomes:
        assert ": Unauthorized: refused by the worker:" in line and "only Kepler's own workflows" \
            in line, line
    assert world.differences(before, world.snapshot(sandbox, [NS])) == []


async def test_a_canary_continued_onto_keplers_queue_with_a_crafted_state_changes_nothing(
        dev_env: Any, e2e_worker: None, target: Platform, sandbox: Any) -> None:
    client: Client = dev_env.client
    kepler_queue = target.temporal.task_queue
    rogue_queue = f"rogue-{uuid.uuid4()}"
    before = world.snapshot(sandbox, [NS])
    req = signed(CanaryRequest(service=SERVICE, env="staging", ref="v2", requested_by="carol"))
    async with Worker(client, task_queue=rogue_queue, workflows=[RogueCanary]):
        handle = await client.start_workflow("Canary", args=[req, kepler_queue],
                                             id=naming.workflow_id(SERVICE, "staging"),
                                             task_queue=rogue_queue, result_type=CanaryReport)
        with pytest.raises(WorkflowFailureError) as e:
            await handle.result()
    assert "was not made by run" in str(e.value.cause), e.value.cause
    desc = await client.get_workflow_handle(handle.id).describe()  # the run Kepler's worker ran
    assert desc.raw_description.execution_config.task_queue.name == kepler_queue  # Kepler's own ran it
    assert world.differences(before, world.snapshot(sandbox, [NS])) == []
