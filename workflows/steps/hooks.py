"""Release hooks in a runbook (`hooks:` in the service spec; README "Release hooks").

`around` runs a deploy between the hooks: the pre_deploy undo goes into the saga *before*
the pre_deploy hook runs (compensation runs in reverse, so the down-migration comes after
the old image is back; it also runs when the hook itself failed or was cut short, since a
half-run migration is what it is for), then pre_deploy, the deploy, post_deploy. Each hook
is a Job (activities/kubernetes/hooks.py) with the release's image, env and config; a
failed one fails its step with the tail of its log. A Rollback away from a version whose
release recorded an undo runs it, with that version's image and config, once the target
is live.

Runs whose spec has no hooks issue exactly the commands they did before hooks existed;
runs with hooks take the (retired, deprecated) patch id HOOKS first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Awaitable, Callable

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.kubernetes.cronjob import CronJobActivities
    from activities.kubernetes.hooks import HookActivities
    from kepler import manifests
    from kepler.canary import CanaryState
    from kepler.hooks import HookKind, HookRelease, StartHook, job_name
    from kepler.jobs import JobRef, JobResult, WaitJob
    from kepler.spec import Hook, Hooks, ServiceSpec
    from kepler.payloads import Authorization, PodShape, ReleaseSnapshot, ReleaseTarget
    from workflows.base import LONG_WAIT, KeplerWorkflow, StepFailed, StepOptions, Undo
    import workflows.steps.kube as kube

HOOKS = "kepler-release-hooks"  # retired patch (deprecated in 0.2.0); only runs with hooks
WAIT_SLACK = timedelta(minutes=1)


def of(spec: ServiceSpec) -> Hooks | None:
    """The spec's hooks (None: none)."""
    hooks = spec.hooks
    if hooks is None or not (hooks.pre_deploy or hooks.post_deploy):
        return None
    patches.retired(HOOKS)
    return hooks


def recorded_undo(hooks: Hooks | None, ran: bool = True) -> Hook | None:
    """What the release history keeps, so a rollback away from this version can run it."""
    return hooks.pre_deploy.undo if ran and hooks and hooks.pre_deploy else None


def release_of(spec: ServiceSpec, env: str, target: ReleaseTarget, image: str, commit: str,
               version: str) -> HookRelease:
    """A hook runs with the release's image, env, resources, config and volumes."""
    return HookRelease(target=target, image=image, commit=commit, version=version,
                       config=spec.config_files, env=spec.env_in(env),
                       resources=spec.resources_in(env),
                       pod=manifests.pod_shape(spec, env, job=True))


def register_undo(wf: KeplerWorkflow, hooks: Hooks | None, release: HookRelease,
                  authorization: Authorization) -> list[Undo]:
    undo = recorded_undo(hooks)
    if undo is None:
        return []
    return [wf.saga.add(f"pre_deploy undo `{' '.join(undo.command)[:80]}` of "
                        f"{release.version or release.image[-19:]}",
                        lambda: run(wf, "undo", undo, release, authorization, cleanup=False))]


async def around(wf: KeplerWorkflow, hooks: Hooks | None, release: HookRelease,
                 authorization: Authorization, deploy: Callable[[], Awaitable[None]]) -> list[Undo]:
    """pre_deploy, `deploy()`, post_deploy; returns the undo it registered (a canary
    drops it once promoted)."""
    if hooks is None:
        await deploy()
        return []
    undo = register_undo(wf, hooks, release, authorization)
    if hooks.pre_deploy is not None:
        await run(wf, "pre_deploy", hooks.pre_deploy, release, authorization, never_ran=undo)
    else:
        wf.skip("pre_deploy hook", "none in the service spec")
    await deploy()
    if hooks.post_deploy is not None:
        await run(wf, "post_deploy", hooks.post_deploy, release, authorization)
    else:
        wf.skip("post_deploy hook", "none in the service spec")
    return undo


async def run(wf: KeplerWorkflow, kind: HookKind, hook: Hook, release: HookRelease,
              authorization: Authorization, cleanup: bool = True,
              never_ran: list[Undo] | None = None) -> JobResult:
    """Start the hook's Job and wait for its verdict; a failed hook raises StepFailed.
    `cleanup`: stop the Job if the operation ends while it runs. `never_ran`: undos to
    drop if the Job was never created (its start refused or failed)."""
    assert wf.state is not None
    label = "pre_deploy undo" if kind == "undo" else f"{kind} hook"
    name = job_name(release.target.service, workflow.info().run_id, kind)
    ref = JobRef(target=release.target, name=name)
    stop = wf.saga.add(f"stop {label} {name} if it still runs", lambda: wf.step(
        f"undo: stop {name}", HookActivities.stop_job, ref), cleanup=True) if cleanup else None
    try:
        started: JobRef = await wf.step(label, HookActivities.start_job, StartHook(
            release=release, name=name, hook=kind, command=hook.command, timeout=hook.timeout,
            annotations=kube.release_annotations(wf.state.requested_by, release.commit or None,
                                                  release.version or None),
            authorization=authorization))
    except StepFailed:
        wf.saga.discard(*(never_ran or []), *([stop] if stop else []))
        raise
    timeout = timedelta(seconds=started.active_deadline) + WAIT_SLACK
    options = StepOptions(start_to_close=timeout + WAIT_SLACK, heartbeat=timedelta(seconds=30),
                          schedule_to_close=timeout * 2 + LONG_WAIT.start_to_close)
    result: JobResult = await wf.step(f"wait for the {label}", CronJobActivities.wait_job,
                                      WaitJob(job=started, timeout=timeout), options)
    if stop is not None:
        wf.saga.discard(stop)
    wf.state.notes.append(f"{label} {name} succeeded" + (
        f"; last log lines: {' | '.join(result.log_tail)}" if result.log_tail else ""))
    return result


def _canary_release(wf: KeplerWorkflow, cs: CanaryState) -> HookRelease:
    assert wf.state is not None
    target = ReleaseTarget(env=wf.state.env, namespace=cs.policy.namespace, service=wf.state.service)
    return release_of(cs.spec, wf.state.env, target, cs.image, cs.commit, cs.version)


async def canary(wf: KeplerWorkflow, cs: CanaryState,
                 deploy: Callable[[], Awaitable[None]]) -> list[Undo]:
    """A canary's hooks: pre_deploy before the canary exists, post_deploy once it is ready,
    both before it takes any traffic (the caller shifts the first weight after)."""
    hooks = of(cs.spec)
    undo = await around(wf, hooks, _canary_release(wf, cs), wf.authorization(), deploy)
    cs.hooks_ran = hooks is not None  # carried across continue-as-new
    return undo


def canary_carried(wf: KeplerWorkflow, cs: CanaryState) -> list[Undo]:
    """A continued canary registers again the undo of the hook its first run ran."""
    if not cs.hooks_ran:
        return []
    return register_undo(wf, cs.spec.hooks, _canary_release(wf, cs), wf.authorization())


def rolled_away_undo(current: ReleaseSnapshot, target_image: str) -> Hook | None:
    """The undo the release of what runs now recorded, when a rollback leaves it."""
    if current.image == target_image:
        return None
    record = next((r for r in current.history if r.image == current.image), None)
    if record is None or record.undo is None:
        return None
    patches.retired(HOOKS)
    return record.undo


async def undo_rolled_away(wf: KeplerWorkflow, current: ReleaseSnapshot, undo: Hook,
                           restore: Undo) -> None:
    """After a rollback's target is live and recorded: the pre_deploy undo of the version
    rolled away from, with its image and config. If it fails, the target stays (the old
    version is not brought back): the rollback ends `failed`, naming the undo."""
    wf.saga.discard(restore)
    record = next(r for r in current.history if r.image == current.image)
    shape = current.pod or PodShape()
    release = HookRelease(target=current.target, image=current.image, commit=record.commit,
                          version=record.version, config=current.config or {}, env=current.env,
                          resources=current.resources or manifests.Resources(),
                          pod=PodShape(volume_mounts=shape.volume_mounts, volumes=shape.volumes))
    await run(wf, "undo", undo, release, wf.authorization("history"), cleanup=False)
