"""Kubernetes steps shared by the workflows, with their timeouts and heartbeats."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.cronjob import CronJobActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from kepler import naming
    from kepler.payloads import (
        ApplyRelease, ApplyResult, DeployRelease, DeployResult, ReleaseSnapshot, ReleaseTarget,
        RolloutResult, WaitRollout, RecordRelease, ReleaseRecord,
    )
    from kepler.scale import Overrides
    from kepler.spec import Hook
    from workflows.base import KeplerWorkflow, StepFailed, StepOptions


def release_record(image: str, commit: str, version: str, requested_by: str,
                   undo: Hook | None = None, break_glass: str = "") -> ReleaseRecord:
    """This run's entry in the workload's release history (`break_glass`: the reason it went
    through a freeze)."""
    info = workflow.info()
    return ReleaseRecord(image=image, commit=commit, version=version, at=workflow.now(),
                         release_id=f"{info.workflow_id}/{info.run_id}",
                         requested_by=requested_by, undo=undo, break_glass=break_glass)


async def record_release(wf: KeplerWorkflow, target: ReleaseTarget, image: str, commit: str,
                         version: str, requested_by: str, cronjob: bool = False,
                         undo: Hook | None = None, break_glass: str = "") -> None:
    """The release is live and healthy: it heads the workload's own release history, which
    `rollback --to previous` reads."""
    record = RecordRelease(target=target, record=release_record(
        image, commit, version, requested_by, undo, break_glass))
    activity = CronJobActivities.record_release if cronjob else DeploymentActivities.record_release
    await wf.step("record the release", activity, record)


def release_annotations(requested_by: str, commit: str | None = None,
                        version: str | None = None) -> dict[str, str]:
    """What a release writes on the workload: this run's id, who asked, commit, version."""
    info = workflow.info()
    annotations = {naming.RELEASE_ID: f"{info.workflow_id}/{info.run_id}"}
    if commit is not None:
        annotations[naming.COMMIT] = commit
    annotations[naming.REQUESTED_BY] = requested_by
    if version is not None:
        annotations[naming.VERSION] = version
    return annotations


async def snapshot(wf: KeplerWorkflow, target: ReleaseTarget) -> ReleaseSnapshot:
    return await wf.step("record current release", DeploymentActivities.snapshot, target)


def overrides_of(snapshot: ReleaseSnapshot) -> Overrides:
    """The `kepler scale|resources` overrides on the workload. Bad data read from the world
    fails the step that read it, never the workflow task (which would retry for ever)."""
    try:
        return Overrides.from_annotations(snapshot.annotations)
    except ValueError as e:
        raise StepFailed("record current release", str(e), "InvalidInput") from None


async def apply(wf: KeplerWorkflow, change: ApplyRelease) -> ApplyResult:
    return await wf.step("apply image and config", DeploymentActivities.apply_release,
                         authorized(wf, change))


def authorized(wf: KeplerWorkflow, change: ApplyRelease) -> ApplyRelease:
    """Every release written carries what the apply activity checks again: the run's own
    signed request and gate approvals, unless the caller gave something more specific."""
    if change.authorization is not None:
        return change
    return change.model_copy(update={"authorization": wf.authorization()})


async def restore(wf: KeplerWorkflow, previous: ReleaseSnapshot) -> ApplyResult:
    return await wf.step("restore previous release", DeploymentActivities.restore_release, previous)


async def wait_rollout(wf: KeplerWorkflow, wait: WaitRollout) -> RolloutResult:
    return await wf.step("wait for rollout", DeploymentActivities.wait_rollout, wait,
                         rollout_options(wait.timeout))


async def deploy(wf: KeplerWorkflow, change: ApplyRelease, timeout: timedelta,
                 record: ReleaseRecord | None = None) -> DeployResult:
    """apply, wait_rollout and (with `record`) record_release as one step and one activity:
    each activity a release schedules costs the worker and the server a round trip."""
    return await wf.step("apply and roll out", DeploymentActivities.deploy_release,
                         DeployRelease(release=authorized(wf, change), timeout=timeout,
                                       record=record), rollout_options(timeout))


def rollout_options(timeout: timedelta) -> StepOptions:
    return StepOptions(start_to_close=timeout + timedelta(minutes=1), heartbeat=timedelta(seconds=10),
                       schedule_to_close=timeout * 2 + timedelta(minutes=5))


async def restore_and_wait(wf: KeplerWorkflow, previous: ReleaseSnapshot,
                           timeout: timedelta) -> None:
    result = await restore(wf, previous)
    if previous.replicas:
        await wait_rollout(wf, WaitRollout(target=previous.target, generation=result.generation,
                                           timeout=timeout))
