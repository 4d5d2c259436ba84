"""In-memory activities for several services at once (trains, scale, resources), with
the real activity names: FakeWorld's, with the Kubernetes ones keyed by service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kepler import naming
from kepler.decommission import RunningQuery
from kepler.spec import Resources
from kepler.scale import OVERRIDE_KEYS, ApplyOverrides, DeploymentState, Overrides
from kepler.payloads import (
    ApplyRelease, ApplyResult, ReleaseSnapshot, ReleaseTarget, RolloutResult, WaitRollout,
)
from tests.fakes.world import FakeWorld, by_name, with_combined


def original(service: str) -> dict[str, Any]:
    return {"image": f"reg/demo/{service}@sha256:" + "0" * 64, "config": {"v": "old"},
            "replicas": 2, "resources": Resources(), "annotations": {}, "generation": 1}


@dataclass
class FleetWorld(FakeWorld):
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    crash: set[str] = field(default_factory=set)     # services whose next rollout crashes
    busy: dict[str, str] = field(default_factory=dict)  # service -> what runs on it
    events: list[tuple[str, str]] = field(default_factory=list)
    rollout_seconds: float = 0.0
    on_restore: dict[str, Any] = field(default_factory=dict)  # service -> called before its restore
    max_parallel: int = 0
    on_overrides: Any = None  # called with each ApplyOverrides written (not its undo)
    _rolling: int = 0

    def deploy(self, service: str) -> dict[str, Any]:
        return self.deployments.setdefault(service, original(service))

    def activities(self) -> list[Any]:
        world = self
        base = by_name(super().activities())

        @activity.defn(name="kubernetes.snapshot")
        async def snapshot(t: ReleaseTarget) -> ReleaseSnapshot:
            d = world.deploy(t.service)
            world.events.append(("snapshot", t.service))
            return ReleaseSnapshot(target=t, exists=True, image=d["image"], replicas=d["replicas"],
                                   config=dict(d["config"]), resources=d["resources"],
                                   annotations=dict(d["annotations"]))

        def write(t: ReleaseTarget, image: str, replicas: int, config: dict, resources: Any,
                  annotations: dict) -> ApplyResult:
            d = world.deploy(t.service)
            d.update(image=image, replicas=replicas, config=dict(config or {}),
                     resources=resources or d["resources"],
                     annotations={**d["annotations"], **annotations})
            d["generation"] += 1
            return ApplyResult(changed=True, generation=d["generation"])

        @activity.defn(name="kubernetes.apply_release")
        async def apply_release(a: ApplyRelease) -> ApplyResult:
            world.events.append(("apply", a.target.service))
            return write(a.target, a.image, a.replicas, a.config, a.resources, a.annotations)

        @activity.defn(name="kubernetes.restore_release")
        async def restore_release(s: ReleaseSnapshot) -> ApplyResult:
            world.events.append(("restore", s.target.service))
            if s.target.service in world.on_restore:
                world.on_restore.pop(s.target.service)(world)
            return write(s.target, s.image, s.replicas, s.config, s.resources, s.annotations)

        @activity.defn(name="kubernetes.wait_rollout")
        async def wait_rollout(w: WaitRollout) -> RolloutResult:
            service = w.target.service
            world.events.append(("rollout", service))
            world._rolling += 1
            world.max_parallel = max(world.max_parallel, world._rolling)
            try:
                if world.rollout_seconds:
                    await asyncio.sleep(world.rollout_seconds)
            finally:
                world._rolling -= 1
            if service in world.crash:
                world.crash.discard(service)  # the undo's rollout then succeeds
                raise ApplicationError(f"{service}-staging/{service}: pod {service}-x: CrashLoopBackOff",
                                       type="RolloutFailed", non_retryable=True)
            return RolloutResult(ready_replicas=world.deploy(service)["replicas"])

        @activity.defn(name="temporal.running_operations")
        async def running_operations(q: RunningQuery) -> list[str]:
            return [world.busy[q.service]] if q.service in world.busy else []

        @activity.defn(name="kubernetes.deployment_state")
        async def deployment_state(t: ReleaseTarget) -> DeploymentState:
            if t.service == "ghost":
                return DeploymentState(target=t)
            d = world.deploy(t.service)
            return DeploymentState(target=t, exists=True, replicas=d["replicas"],
                                   resources=d["resources"], generation=d["generation"],
                                   overrides=Overrides.from_annotations(d["annotations"]),
                                   commit=d["annotations"].get(naming.COMMIT, ""),
                                   image=d["image"])

        @activity.defn(name="kubernetes.apply_overrides")
        async def apply_overrides(a: ApplyOverrides) -> DeploymentState:
            world.events.append(("overrides", a.target.service))
            if world.on_overrides is not None and not a.undo:
                world.on_overrides(a)
            d = world.deploy(a.target.service)
            ann = {k: v for k, v in d["annotations"].items() if k not in OVERRIDE_KEYS}
            ann.update({k: v for k, v in a.overrides.annotations().items() if v is not None})
            d.update(annotations=ann, generation=d["generation"] + 1)
            if a.replicas is not None:
                d["replicas"] = a.replicas
            if a.resources is not None:
                d["resources"] = a.resources
            return await deployment_state(a.target)

        mine = [snapshot, apply_release, restore_release, wait_rollout, running_operations,
                deployment_state, apply_overrides]
        names = {getattr(a, "__temporal_activity_definition").name for a in mine}
        return with_combined([a for n, a in base.items() if n not in names] + mine)
