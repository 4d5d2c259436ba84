"""Release hooks in the in-memory world: a spec with `hooks:`, and the hook Job activities
(`hook.start_job`, `cronjob.wait_job`, `hook.stop_job`) recording what each hook ran with
and what the workload ran at that moment."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kepler.hooks import StartHook
from kepler.jobs import JobRef, JobResult, WaitJob
from kepler.spec import Hooks, ServiceSpec
from kepler.payloads import ReadSpec
from tests.fakes.world import FakeWorld, replaced


@dataclass
class HookRun:
    kind: str
    image: str  # the hook's image
    command: list[str]
    config: dict[str, str]
    workload_image: str  # what the Deployment ran when the hook started


@dataclass
class HookWorld:
    """Wraps a FakeWorld (or CanaryWorld): its activities, with a spec that has `hooks`."""
    world: FakeWorld
    hooks: Hooks | None
    fail: set[str] = field(default_factory=set)  # hook kinds whose Job fails
    hang: set[str] = field(default_factory=set)  # hook kinds whose Job runs until stopped
    runs: list[HookRun] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [r.kind for r in self.runs]

    def activities(self) -> list[Any]:
        hw, world = self, self.world

        @activity.defn(name="gitlab.read_spec")
        async def read_spec(r: ReadSpec) -> ServiceSpec:
            world.calls.append("read_spec")
            return ServiceSpec(name=r.service, team="t", config_files={"v": r.sha[:6]},
                               hooks=hw.hooks)

        @activity.defn(name="hook.start_job")
        async def start_job(h: StartHook) -> JobRef:
            assert h.authorization is not None, "a hook started without its authorization"
            world.calls.append(f"hook {h.hook}")
            hw.runs.append(HookRun(h.hook, h.release.image, list(h.command), dict(h.release.config),
                                   world.deployment["image"]))
            return JobRef(target=h.release.target, name=h.name, image=h.release.image,
                          created=True, active_deadline=h.timeout)

        @activity.defn(name="cronjob.wait_job")
        async def wait_job(w: WaitJob) -> JobResult:
            kind = next(k for k in ("pre_deploy", "post_deploy", "undo")
                        if f"-{k.replace('_', '-')}-" in w.job.name)
            while kind in hw.hang:
                activity.heartbeat("running")
                await asyncio.sleep(0.05)
            if kind in hw.fail:
                world.calls.append(f"hook {kind} failed")
                raise ApplicationError(f"Job {w.job.target.namespace}/{w.job.name} failed: "
                                       f"BackoffLimitExceeded; last log lines: {kind}: boom",
                                       type="JobFailed", non_retryable=True)
            return JobResult(name=w.job.name, outcome="succeeded", log_tail=[f"{kind}: done"])

        @activity.defn(name="hook.stop_job")
        async def stop_job(ref: JobRef) -> bool:
            hw.stopped.append(ref.name)
            hw.hang.clear()
            return True

        return replaced(world.activities(), read_spec, start_job, wait_job, stop_job)
