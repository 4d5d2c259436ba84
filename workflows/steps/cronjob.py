"""The release steps of a cronjob service, used by ReleaseVersion (and Rollback) for
`type: cronjob`: record the CronJob, update its pod template by digest, then (when the
schedule asks) run the new image once now as a Job that must succeed. There is no
rollout to wait for: the run is the verification."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.cronjob import CronJobActivities
    from kepler import manifests
    from kepler.jobs import JobRef, JobResult, StartJob, WaitJob, job_name
    from kepler.models import ReleaseRequest
    from kepler.spec import ServiceSpec
    from kepler.payloads import ApplyRelease, ApplyResult, Authorization, ReleaseSnapshot, ReleaseTarget
    from workflows.base import LONG_WAIT, KeplerWorkflow, StepOptions
    import workflows.steps.kube as kube

WAIT_SLACK = timedelta(minutes=1)


async def snapshot(wf: KeplerWorkflow, target: ReleaseTarget,
                   name: str = "record current release") -> ReleaseSnapshot:
    return await wf.step(name, CronJobActivities.snapshot, target)


async def restore(wf: KeplerWorkflow, previous: ReleaseSnapshot,
                  name: str = "restore previous release") -> ApplyResult:
    return await wf.step(name, CronJobActivities.restore_release, previous)


async def apply(wf: KeplerWorkflow, change: ApplyRelease) -> ApplyResult:
    return await wf.step("apply image and config", CronJobActivities.apply_release,
                         kube.authorized(wf, change))


async def run_once(wf: KeplerWorkflow, target: ReleaseTarget, kind: str,
                   annotations: dict[str, str], step: str = "run once now") -> JobResult:
    """Start a Job from the CronJob's template (its undo, registered first, stops it if it
    still runs) and wait for its verdict; a failed run raises StepFailed."""
    name = job_name(target.service, workflow.info().run_id, kind)
    ref = JobRef(target=target, name=name)
    stop = wf.saga.add(f"stop run {name} if it still runs",
                       lambda: wf.step(f"undo: stop {name}", CronJobActivities.stop_job, ref),
                       cleanup=True)
    started: JobRef = await wf.step(step, CronJobActivities.start_job, StartJob(
        target=target, name=name, annotations=annotations))
    timeout = timedelta(seconds=started.active_deadline) + WAIT_SLACK
    options = StepOptions(start_to_close=timeout + WAIT_SLACK, heartbeat=timedelta(seconds=30),
                          schedule_to_close=timeout * 2 + LONG_WAIT.start_to_close)
    result: JobResult = await wf.step("wait for the run", CronJobActivities.wait_job,
                                      WaitJob(job=started, timeout=timeout), options)
    wf.saga.discard(stop)
    assert wf.state is not None
    wf.state.notes.append(f"run {name} succeeded" + (
        f"; last log lines: {' | '.join(result.log_tail)}" if result.log_tail else ""))
    return result


async def release(wf: KeplerWorkflow, req: ReleaseRequest, previous: ReleaseSnapshot,
                  spec: ServiceSpec, image: str, commit: str,
                  authorization: Authorization | None = None) -> None:
    """Put `image` in the CronJob (its undo puts `previous` back), then verify it with one
    run when the schedule asks. Raises StepFailed; the caller compensates."""
    target = previous.target
    wf.saga.add(f"restore {previous.image or 'the empty cronjob'} and its config",
                lambda: restore(wf, previous))
    annotations = kube.release_annotations(req.requested_by, commit=commit, version=req.ref)
    await apply(wf, ApplyRelease(
        target=target, image=image, replicas=1, config=spec.config_files,
        env=spec.env_in(req.env), resources=spec.resources_in(req.env), annotations=annotations,
        pod=manifests.pod_shape(spec, req.env, job=True), authorization=authorization))
    if spec.schedule and spec.schedule.run_on_release:
        await run_once(wf, target, "verify", annotations)
    else:
        wf.skip("run once now", "schedule.run_on_release is off in the service spec")
