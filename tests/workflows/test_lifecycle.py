"""The one operation lifecycle (workflows/base.py): where the workflows' own endings used
to disagree, each now ends the same way. Every test here failed against a copy before."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows
from kepler.jobs import JobRef, JobResult, RunJobRequest, StartJob, WaitJob

from kepler.clients import operations as ops
from kepler.models import CanaryRequest, CreateServiceRequest, RollbackRequest
from kepler.spec import Resources, ServiceSpec
from kepler.settings import Bounds
from kepler.payloads import (
    EnvironmentPolicy, PolicyQuery, ReadSpec, Revision, RolloutResult, VerifyRelease, VerifyResult,
    WaitRollout,
)
from tests.fakes.world import FakeWorld, by_name, replaced, sha_of
from tests.workflows.test_release import Harness, failure_of, harness, release  # noqa: F401
from tests.helpers import decide, signed

OLD = "reg/demo/shop@sha256:" + "0" * 64


async def error_type_of(started: ops.Started) -> str:
    with pytest.raises(WorkflowFailureError) as e:
        await started.handle.result()
    return getattr(e.value.cause, "type", "")


async def test_an_undo_that_fails_is_named_and_the_outcome_is_failed_not_rolled_back(
        harness: Harness) -> None:
    """The release's rollout fails and so does putting the old image back: nothing may
    claim `rolled_back`; the message names what is NOT put back."""
    harness.world.rollout_fails = True
    harness.world.fail_step = "restore_release"
    started = await harness.start(release(ref="v2"))
    assert await error_type_of(started) == "KeplerFailed"
    status = await ops.status(harness.client, started.workflow_id)
    assert status.outcome == "failed"
    assert (f"NOT put back: restore {OLD} and its config (restore previous release: "
            "restore_release exploded)") in status.error
    assert any(n.startswith("not put back: ") for n in status.notes)
    assert [n.event for n in harness.world.notes][-1] == "failed"


async def test_every_operation_notifies_when_cancelled(harness: Harness) -> None:
    """A rollback cancelled mid-rollout puts the old image back and says so (only
    releases and canaries used to notify on cancel)."""
    harness.world.history = [Revision(revision=2, image=OLD),
                             Revision(revision=1, image="reg/demo/shop@sha256:" + "c" * 64,
                                      commit=sha_of("v0"))]
    harness.world.rollout_hangs = True
    started = await harness.start(RollbackRequest(service="shop", env="staging", requested_by="carol"))
    await harness.wait_stage(started, "wait for rollout")
    await started.handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await started.handle.result()
    status = await ops.status(harness.client, started.workflow_id)
    assert status.outcome == "cancelled" and status.undone == [f"restore {OLD} and its config"]
    assert harness.world.deployment["image"] == OLD
    cancelled = [n for n in harness.world.notes if n.event == "cancelled"]
    assert len(cancelled) == 1 and f"undone: restore {OLD}" in cancelled[0].text


async def test_a_create_whose_later_step_fails_is_rolled_back_when_everything_was_undone(
        harness: Harness) -> None:
    """CreateService used to say `failed` even after deleting all it made; like every
    operation it now says `rolled_back` when every undo succeeded."""
    harness.world.fail_step = "ensure_job"
    started = await harness.start(CreateServiceRequest(spec=ServiceSpec(name="shop", team="t"),
                                                       requested_by="carol"))
    assert await error_type_of(started) == "KeplerRolledBack"
    status = await ops.status(harness.client, started.workflow_id)
    assert status.outcome == "rolled_back"
    assert ("undone: delete the Jenkins job if this run created it, or put back the one it "
            "adopted, remove the GitLab webhook if this run added it, put back the files this "
            "run committed if it adopted the project, delete the GitLab project") in status.error
    assert {"remove_hook", "delete_project_if_created"} <= set(harness.world.calls)


async def test_a_failed_rollback_that_put_everything_back_says_rolled_back(harness: Harness) -> None:
    harness.world.history = [Revision(revision=2, image=OLD),
                             Revision(revision=1, image="reg/demo/shop@sha256:" + "c" * 64,
                                      commit=sha_of("v0"))]
    harness.world.rollout_fails = True
    started = await harness.start(RollbackRequest(service="shop", env="staging", requested_by="carol"))
    assert await error_type_of(started) == "KeplerRolledBack"
    assert harness.world.deployment["image"] == OLD
    status = await ops.status(harness.client, started.workflow_id)
    assert status.outcome == "rolled_back" and "CrashLoopBackOff" in status.error


async def test_bad_data_read_from_the_world_fails_the_step_not_the_workflow_task(
        harness: Harness) -> None:
    """A hand-edited override annotation: the release fails at once, naming it, and
    changes nothing (it used to fail the workflow task, retried for ever)."""
    harness.world.deployment["annotations"] = {"kepler.dev/replicas": "lots"}
    started = await harness.start(release(ref="v2"))
    message = await failure_of(started)
    assert "step 'record current release' failed: annotation kepler.dev/replicas: 'lots'" \
        in message
    assert "apply_release" not in harness.world.calls and harness.world.deployment["image"] == OLD


async def test_approvals_are_recorded_as_data(harness: Harness) -> None:
    started = await harness.start(release(env="prod"))
    await harness.wait_stage(started, "awaiting approval")
    await decide(harness.client, "shop", "prod", "alice", "approve", "LGTM")
    report = await started.handle.result()
    assert report.approved_by == ["alice"]
    status = await ops.status(harness.client, started.workflow_id)
    (approval,) = status.approvals
    assert (approval.approver, approval.verdict, approval.comment) == ("alice", "approve", "LGTM")
    assert status.steps[0].started_at <= approval.at


async def test_a_cancel_during_compensation_does_not_stop_the_undo(time_env: Any) -> None:
    """The rollout failed and the old release is being put back when a cancel arrives:
    the undo finishes, and the outcome says what happened (it used to end mid-undo with
    status 'running' and no notification)."""
    world, restoring = FakeWorld(), asyncio.Event()

    @activity.defn(name="kubernetes.wait_rollout")
    async def wait_rollout(w: WaitRollout) -> RolloutResult:
        if w.generation == 2:
            raise ApplicationError("CrashLoopBackOff", type="RolloutFailed", non_retryable=True)
        restoring.set()
        await asyncio.sleep(0.5)  # the restore's rollout takes a moment
        return RolloutResult(ready_replicas=2)

    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=replaced(world.activities(), wait_rollout)):
        started = await ops.start(time_env.client, signed(release(ref="v2")), queue)
        await asyncio.wait_for(restoring.wait(), 10)
        await started.handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await started.handle.result()
        status = await ops.status(time_env.client, started.workflow_id)
    assert status.outcome == "rolled_back" and status.stage == "done"
    assert status.undone == [f"restore {OLD} and its config"]
    assert world.deployment["image"] == OLD
    assert [n.event for n in world.notes][-1] == "rolled_back"


async def test_a_failed_job_run_is_failed_not_rolled_back(time_env: Any) -> None:
    """Stopping a run is a clean-up, not a way back: a failed `kepler job run` ends
    `failed` (its effects are not undone)."""
    @activity.defn(name="cronjob.start_job")
    async def start_job(s: StartJob) -> JobRef:
        return JobRef(target=s.target, name=s.name)

    @activity.defn(name="cronjob.wait_job")
    async def wait_job(w: WaitJob) -> JobResult:
        raise ApplicationError("job failed: exit 1", type="JobFailed", non_retryable=True)

    @activity.defn(name="cronjob.stop_job")
    async def stop_job(r: JobRef) -> bool:
        return False  # it has finished: nothing to stop

    world, queue = FakeWorld(), f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=[*world.activities(), start_job, wait_job, stop_job]):
        started = await ops.start(time_env.client, RunJobRequest(
            service="shop", env="staging", requested_by="carol"), queue)
        assert await error_type_of(started) == "KeplerFailed"
        status = await ops.status(time_env.client, started.workflow_id)
    assert status.outcome == "failed" and "cleaned up: stop run" in status.error
    assert [n.event for n in world.notes][-1] == "failed"


async def test_a_spec_over_the_environments_bounds_is_refused_before_any_change(
        time_env: Any) -> None:
    """A spec asking 50 replicas where prod allows 10: release, canary and rollback refuse
    it before building, approving or applying anything, naming field, value and bound."""
    world = FakeWorld()
    fake_policy = by_name(world.activities())["platform.environment_policy"]

    @activity.defn(name="gitlab.read_spec")
    async def read_spec(r: ReadSpec) -> ServiceSpec:
        return ServiceSpec(name=r.service, team="t", replicas=50,
                           resources=Resources(cpu_limit="16"))

    @activity.defn(name="platform.environment_policy")
    async def environment_policy(q: PolicyQuery) -> EnvironmentPolicy:
        policy = await fake_policy(q)
        return policy.model_copy(update={"bounds": Bounds(max_replicas=10, max_cpu="4")})

    world.history = [Revision(revision=1, image="reg/demo/shop@sha256:" + "c" * 64,
                              commit=sha_of("v0"))]
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=replaced(world.activities(), read_spec, environment_policy)):
        for req in (release(ref="v2"), CanaryRequest(service="shop", env="staging", ref="v2",
                                                     requested_by="carol"),
                    RollbackRequest(service="shop", env="staging", requested_by="carol")):
            started = await ops.start(time_env.client, signed(req, await time_env.get_current_time()), queue)
            message = await failure_of(started)
            assert "step 'check bounds' failed" in message, message
            if not isinstance(req, RollbackRequest):  # a rollback keeps the running replicas
                assert "service spec: replicas: 50 is over this environment's maximum of 10" \
                    in message
            assert "cpu limit: 16 is over this environment's maximum of 4" in message
            status = await ops.status(time_env.client, started.workflow_id)
            assert status.outcome == "failed" and status.bad_input
    assert not {"build", "apply_release", "apply_objects staging"} & set(world.calls)
    assert world.deployment["image"] == OLD


@pytest.mark.parametrize("verdict,no_data,outcome", [
    ("passed", "fail", "succeeded"), ("failed", "fail", "rolled_back"),
    ("no_data", "fail", "rolled_back"), ("no_data", "skip", "succeeded"),
])
async def test_verification_after_the_bake_time_follows_the_no_data_policy(
        time_env: Any, verdict: str, no_data: str, outcome: str) -> None:
    """bake_time 10 min, then one Prometheus check: a failed check rolls the release back;
    no data follows the environment's verify_no_data (it used to pass silently)."""
    world = FakeWorld()
    fake_policy, seen = by_name(world.activities())["platform.environment_policy"], []

    @activity.defn(name="platform.environment_policy")
    async def environment_policy(q: PolicyQuery) -> EnvironmentPolicy:
        policy = await fake_policy(q)
        return policy.model_copy(update={"bake_time": timedelta(minutes=10),
                                         "verify_with_prometheus": True, "verify_no_data": no_data})

    @activity.defn(name="prometheus.verify")
    async def verify(v: VerifyRelease) -> VerifyResult:
        seen.append(activity.info().scheduled_time)
        return VerifyResult(verdict=verdict, detail=f"verdict {verdict}")

    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=replaced(world.activities(), environment_policy, verify)):
        started = await ops.start(time_env.client, signed(release(ref="v2")), queue)
        try:
            await started.handle.result()
        except WorkflowFailureError:
            pass
        status = await ops.status(time_env.client, started.workflow_id)
    assert status.outcome == outcome, status.error
    applied = next(s for s in status.steps if s.name == "apply and roll out").finished_at
    assert seen and seen[0] - applied >= timedelta(minutes=10)  # verified after the bake
    # recorded live only once verified: its own step, after the bake and the check
    assert ("record the release" in [s.name for s in status.steps]) == (outcome == "succeeded")
    assert (world.deployment["image"] == OLD) == (outcome == "rolled_back")  # else v2 is live
    if verdict == "no_data":
        assert ("verify_no_data policy is fail" in status.error) == (no_data == "fail")
        assert any("verify_no_data policy (skip)" in n for n in status.notes) == (no_data == "skip")
