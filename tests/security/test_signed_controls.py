"""Issue 26, items 3 and 6, as an attacker with access to the Temporal frontend tries them:
typed (or wrongly signed) canary controls, raw starts of Scale and SetResources into prod,
and `kubernetes.apply_overrides` run with whatever a workflow hands it. Each is refused
naming the rule, and nothing changed: the canary keeps analysing at its weight, prod keeps
its replicas and resources."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Iterator

import pytest
from temporalio.client import (
    WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

import workflows
from activities.kubernetes.scale import ScaleActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests
from kepler.clients import operations as ops
from kepler.canary import CanaryControl
from kepler.alerts import AlertActionRequest
from kepler.identity import SYSTEM, SignedStatement, Statement, sign
from kepler.models import CanaryRequest, OperationStatus
from kepler.scale import ApplyOverrides, Overrides, ResourcesRequest, ScaleReport, ScaleRequest
from kepler.settings import Platform, load_platform, parse_platform
from kepler.spec import Resources, ServiceSpec
from kepler.payloads import ApplyObjects, Authorization, ReleaseTarget
from sandbox.serve import Sandbox
from starter.canary import control_signer
from starter.signing import sign_request, signing_key
from tests.conftest import platform_yaml
from tests.fakes.canary import CanaryWorld
from tests.fakes.fleet import FleetWorld
from tests.helpers import decide, sandbox_fixture, signed

OLD = "reg/demo/shop@sha256:" + "0" * 64


async def until(handle: WorkflowHandle, check: Callable[[OperationStatus], bool], what: str,
                skip: Any = None) -> OperationStatus:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status = await handle.query("status", result_type=OperationStatus)
        if check(status):
            return status
        assert asyncio.get_running_loop().time() < deadline, f"never reached {what}: {status.stage}"
        await (skip() if skip else asyncio.sleep(0.05))


def signer(who: str, key: str | None = None, **tamper: Any) -> ops.Sign:
    """Signs as `who` would (with `key`'s key, default their own), after changing the
    statement's fields `tamper` (another run, another verb, an old time)."""
    p = load_platform()

    async def signs(statement: Statement) -> SignedStatement:
        statement = statement.model_copy(update=tamper)
        return await asyncio.to_thread(sign, statement, signing_key(p, key or who))
    return signs


# --- canary controls ---------------------------------------------------------------------------

@pytest.fixture
async def canary(time_env) -> AsyncIterator[tuple[Any, CanaryWorld, WorkflowHandle]]:
    """A prod canary, approved by alice, analysing at 10 %."""
    world = CanaryWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        req = signed(CanaryRequest(service="shop", env="prod", ref="v2", requested_by="carol",
                                   steps=[10, 20, 50]))
        handle = (await ops.start(time_env.client, req, queue)).handle
        await until(handle, lambda s: s.stage == "awaiting approval", "approval")
        await decide(time_env.client, "shop", "prod", "alice")
        await until(handle, lambda s: s.canary is not None and s.canary.step == 1
                    and s.stage.startswith("canary"), "step 1")
        yield time_env.client, world, handle
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate()


async def control(client: Any, verb: str, by: str, sign: ops.Sign | None) -> str:
    return await ops.control(client, "shop", "prod", verb, CanaryControl(by=by), sign)


@pytest.mark.parametrize("case,by,sign,why", [
    ("typed (the Temporal UI's update form)", "alice", None, "promote: unsigned"),
    ("signed by a person who is no approver", "mallory", signer("mallory"),
     "mallory may not promote the canary in prod"),
    ("signed by its own requester", "carol", signer("carol"), "carol may not promote"),
    ("an approver's promote of another run", "alice", signer("alice", run_id="run-0"),
     "run_id differs"),
    ("an approver's pause, sent as promote", "alice", signer("alice", action="pause"),
     "action differs"),
    ("an approver's promote of an hour ago", "alice",
     signer("alice", issued_at=datetime.now(timezone.utc) - timedelta(hours=1)),
     "a control is valid for 0:15:00 after signing"),
    ("alice's name, signed with a key nobody listed", "alice", signer("alice", key="stranger"),
     "is not listed for kepler"),
    ("alice's name, signed by mallory", "alice", signer("mallory"),
     "signed by mallory, but the control names alice"),
])
async def test_a_prod_canary_is_not_promoted_past_its_analysis(
        canary: tuple[Any, CanaryWorld, WorkflowHandle], case: str, by: str,
        sign: ops.Sign | None, why: str) -> None:
    client, world, handle = canary
    routes, calls = list(world.route_log), list(world.calls)
    with pytest.raises(ops.Refused, match=why):
        await control(client, "promote", by, sign)
    status = await handle.query("status", result_type=OperationStatus)
    assert status.stage == "canary 10%" and status.outcome == "running", case
    assert not any("promotion" in n for n in status.notes), case
    assert world.deployment["image"] == OLD and world.route_log == routes == [(90, 10, True)]
    assert world.calls == calls, case  # nothing was written, not even a step began


async def test_typed_pause_and_abort_change_nothing_and_a_signed_control_is_used_once(
        canary: tuple[Any, CanaryWorld, WorkflowHandle]) -> None:
    client, world, handle = canary
    for verb in ("pause", "abort"):
        with pytest.raises(ops.Refused, match=f"{verb}: unsigned"):
            await control(client, verb, "carol", None)
    status = await handle.query("status", result_type=OperationStatus)
    assert not status.canary.paused and status.outcome == "running"
    assert world.canary["replicas"] > 0 and world.route_log == [(90, 10, True)]

    used: list[SignedStatement] = []

    async def keeps(statement: Statement) -> SignedStatement:
        used.append(await signer("carol")(statement))
        return used[-1]

    assert (await control(client, "pause", "carol", keeps)).startswith("paused at 10%")
    assert (await control(client, "resume", "carol", signer("carol"))).startswith("resumed")

    async def replays(statement: Statement) -> SignedStatement:
        return used[0]

    with pytest.raises(ops.Refused, match="already used in this run"):
        await control(client, "pause", "carol", replays)
    assert not (await handle.query("status", result_type=OperationStatus)).canary.paused


def alert_request(env: str) -> SignedStatement:
    """What the Alertmanager receiver signs for an alert on shop in `env` (starter/alerts.py)."""
    p = load_platform()
    req = AlertActionRequest(service="shop", env=env, alertname="HighErrorRate", fingerprint="f1",
                             starts_at=datetime.now(timezone.utc), requested_by="alerts")
    return sign_request(p, req, signing_key(p, "alerts"), SYSTEM).signed


async def test_the_alert_receiver_aborts_with_its_signed_action_and_nothing_else(
        canary: tuple[Any, CanaryWorld, WorkflowHandle]) -> None:
    """activities/alerts.py aborts a running canary with the alert action's signed request
    (a system identity signs requests only): one for another environment, or typed, is
    refused; the receiver's own aborts."""
    client, world, handle = canary

    async def abort(signed: SignedStatement | None) -> str:
        try:
            return await handle.execute_update("abort", {
                "by": "alerts", "reason": "5xx", "signed": signed and signed.model_dump(mode="json")},
                result_type=str)
        except WorkflowUpdateFailedError as e:
            raise ops.Refused(str(e.cause)) from None

    with pytest.raises(ops.Refused, match="abort: unsigned"):
        await abort(None)
    with pytest.raises(ops.Refused, match="is not an alert's action on shop in prod"):
        await abort(alert_request("staging"))
    assert world.route_log == [(90, 10, True)]
    assert (await abort(alert_request("prod"))).startswith("aborting")
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "aborted by alerts: 5xx at 10%" in str(e.value.cause)
    assert world.weight == (100, 0, False) and world.canary["replicas"] == 0


# --- Scale and SetResources started raw ------------------------------------------------------

@pytest.fixture
async def fleet(time_env) -> AsyncIterator[tuple[Any, FleetWorld, str]]:
    world = FleetWorld()
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        yield time_env.client, world, queue


def untouched(world: FleetWorld) -> None:
    assert ("overrides", "shop") not in world.events
    d = world.deploy("shop")
    assert (d["replicas"], d["resources"]) == (2, Resources())


@pytest.mark.parametrize("workflow,req,why", [
    ("Scale", ScaleRequest(service="shop", env="prod", replicas=0, requested_by="alice"),
     "the request is not signed"),
    ("Scale", ScaleRequest(service="shop", env="prod", replicas=4, requested_by="alice"),
     "the request is not signed"),
    ("SetResources", ResourcesRequest(service="shop", env="prod", memory="1Mi", memory_limit="1Mi",
                                      requested_by="alice"), "the request is not signed"),
    # signed in the test, not at collection: a request is valid 15 minutes after signing
    ("Scale", lambda: signed(ScaleRequest(service="shop", env="prod", replicas=0,
                                          requested_by="carol")),
     "replicas: 0 is under this environment's minimum of 1"),
    ("SetResources", lambda: signed(ResourcesRequest(service="shop", env="prod", memory="1Mi",
                                                     memory_limit="1Mi", requested_by="carol")),
     "memory request: 1Mi is under this environment's minimum of 32Mi"),
])
async def test_a_raw_start_into_prod_is_refused_before_any_change(
        fleet: tuple[Any, FleetWorld, str], workflow: str, req: Any, why: str) -> None:
    client, world, queue = fleet
    req = req() if callable(req) else req
    with pytest.raises(WorkflowFailureError) as e:
        await client.execute_workflow(workflow, req, id="shop@prod", task_queue=queue,
                                      result_type=ScaleReport)
    assert why in str(e.value.cause)
    status = await client.get_workflow_handle("shop@prod").query("status", result_type=OperationStatus)
    assert status.bad_input and status.pending_approval is None
    untouched(world)


async def test_a_signed_scale_of_prod_waits_for_an_approver_and_changes_nothing_meanwhile(
        fleet: tuple[Any, FleetWorld, str]) -> None:
    client, world, queue = fleet
    handle = await client.start_workflow("Scale", signed(ScaleRequest(
        service="shop", env="prod", replicas=3, requested_by="carol")), id="shop@prod",
        task_queue=queue, result_type=ScaleReport)
    status = await until(handle, lambda s: s.pending_approval is not None, "the gate")
    assert status.pending_approval.approvers == ["alice", "bob"]
    with pytest.raises(ops.Refused, match="four eyes"):
        await decide(client, "shop", "prod", "carol")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    untouched(world)


# --- where it is written: kubernetes.apply_overrides ----------------------------------------

box = sandbox_fixture("signed-overrides", seconds_per_replica=0.05)
RUN = ("vault@prod", "run-1")


@pytest.fixture(scope="module")
def platform(box: Sandbox) -> Iterator[Platform]:
    p = parse_platform(platform_yaml(box.urls, "127.0.0.1:1", "unused"))
    spec = ServiceSpec(name="vault", team="t", replicas=2)
    for env in ("prod", "staging"):
        ActivityEnvironment().run(DeploymentActivities(p).apply_objects, ApplyObjects(
            env=env, manifests=manifests.for_environment(spec, env, f"vault-{env}"), run_id="r0"))
    yield p


TARGET = ReleaseTarget(env="prod", namespace="vault-prod", service="vault")


def run_as(fn: Any, arg: Any, workflow_id: str = RUN[0], run_id: str = RUN[1],
           workflow_type: str = "Scale") -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id=run_id,
                                   workflow_type=workflow_type)
    return env.run(fn, arg)


def live(p: Platform, namespace: str = "vault-prod") -> Any:
    return ActivityEnvironment().run(ScaleActivities(p).deployment_state,
                                     TARGET.model_copy(update={"namespace": namespace}))


def approval(p: Platform, image: str, who: str = "alice", run_id: str = RUN[1]) -> SignedStatement:
    return sign(Statement(action="approve", operation="scale", service="vault", env="prod",
                          workflow_id=RUN[0], run_id=run_id, gate=1, digests=[image],
                          issued_at=datetime.now(timezone.utc)), signing_key(p, who))


def overrides(p: Platform, replicas: int, approvals: list[SignedStatement] | None,
              target: ReleaseTarget = TARGET, requester: str = "carol",
              workflow_id: str = RUN[0]) -> ApplyOverrides:
    request = signed(ScaleRequest(service="vault", env="prod", replicas=replicas,
                                  requested_by=requester)).signed
    if workflow_id != RUN[0]:
        request = sign(request.statement.model_copy(update={"workflow_id": workflow_id}),
                       signing_key(p, requester))
    auth = None if approvals is None else Authorization(request=request, approvals=approvals)
    return ApplyOverrides(target=target, replicas=replicas, overrides=Overrides(replicas=replicas),
                          requested_by=requester, operation_id=RUN[0], authorization=auth)


@pytest.mark.parametrize("case,make,why", [
    ("no authorization", lambda p, img: overrides(p, 3, None), "needs the signed request"),
    ("no approval", lambda p, img: overrides(p, 3, []), "0 of 1 valid approvals"),
    ("the requester's own", lambda p, img: overrides(p, 3, [approval(p, img, "carol")]),
     "0 of 1 valid approvals"),
    ("another run's", lambda p, img: overrides(p, 3, [approval(p, img, run_id="run-0")]),
     "0 of 1 valid approvals"),
    ("of another image", lambda p, img: overrides(p, 3, [approval(p, "other@sha256:" + "b" * 64)]),
     "0 of 1 valid approvals"),
    ("a request of another workflow", lambda p, img: overrides(
        p, 3, [approval(p, img)], workflow_id="vault@staging"), "is not a signed scale"),
    ("to 0 replicas, approved", lambda p, img: overrides(p, 0, [approval(p, img)]),
     "replicas: 0 is under this environment's minimum of 1"),
    ("into staging's namespace, by prod's rules", lambda p, img: overrides(
        p, 3, [approval(p, img)], target=TARGET.model_copy(update={"namespace": "vault-staging"})),
     "vault in prod lives in vault-prod, not vault-staging"),
])
def test_apply_overrides_writes_nothing_unauthorized(platform: Platform, case: str,
                                                     make: Any, why: str) -> None:
    before = [live(platform, ns) for ns in ("vault-prod", "vault-staging")]
    with pytest.raises(ApplicationError, match=why) as e:
        run_as(ScaleActivities(platform).apply_overrides, make(platform, before[0].image))
    assert e.value.type in ("Unauthorized", "InvalidInput") and e.value.non_retryable, case
    assert [live(platform, ns) for ns in ("vault-prod", "vault-staging")] == before, case


def test_apply_overrides_of_another_workflow_type_writes_nothing(platform: Platform) -> None:
    before = live(platform)
    with pytest.raises(ApplicationError, match="of a Scale or SetResources run"):
        run_as(ScaleActivities(platform).apply_overrides,
               overrides(platform, 3, [approval(platform, before.image)]),
               workflow_type="ReleaseVersion")
    assert live(platform).replicas == before.replicas


def test_apply_overrides_with_this_runs_approval_writes_and_only_this_run_undoes_freely(
        platform: Platform) -> None:
    """The change with this run's approval is written; its undo (putting back what the run
    read) needs no approval from that same run (its approvals may have expired since), but
    an 'undo' from any other run is a change like any other."""
    before = live(platform)
    state = run_as(ScaleActivities(platform).apply_overrides,
                   overrides(platform, 3, [approval(platform, before.image)]))
    assert state.replicas == 3 and live(platform).overrides.replicas == 3
    undo = ApplyOverrides(target=TARGET, replicas=before.replicas, overrides=before.overrides,
                          requested_by="carol", operation_id=RUN[0], undo=True)
    with pytest.raises(ApplicationError, match="needs the signed request"):
        run_as(ScaleActivities(platform).apply_overrides, undo, run_id="run-2")
    assert live(platform).replicas == 3
    state = run_as(ScaleActivities(platform).apply_overrides, undo)
    assert state.replicas == before.replicas and live(platform).overrides == before.overrides
