"""The in-memory world of tests/fakes/world.py plus a canary Deployment, a scripted
Prometheus and a log of every routing change, for time-skipping Canary tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kepler.canary import AnalysisResult, CanaryAnalysis, MetricValue
from kepler.payloads import (
    Applied, ApplyObjects, ApplyRelease, ApplyResult, RolloutResult, RouteWeights, ScaleDeployment,
    WaitRollout,
)
from tests.fakes.world import FakeWorld, by_name, with_combined

HEALTHY = {"request-success-rate": 100.0, "request-duration": 40.0}


@dataclass
class CanaryWorld(FakeWorld):
    canary: dict[str, Any] = field(default_factory=lambda: {"exists": False, "image": "",
                                                            "replicas": 0})
    # analysis round (0-based) -> metric values; None values mean no data
    values: Callable[[int], dict[str, float | None]] = lambda n: dict(HEALTHY)
    query_fails: bool = False
    analyses: int = 0
    route_log: list[tuple[int, int, bool]] = field(default_factory=list)
    mirror_log: list[int] = field(default_factory=list)  # each route write's mirror %
    primary_rollout_fails: bool = False
    canary_rollout_hangs: bool = False

    def activities(self) -> list[Any]:
        world = self
        base = by_name(super().activities())
        primary_apply, primary_wait = base["kubernetes.apply_release"], base["kubernetes.wait_rollout"]

        @activity.defn(name="kubernetes.apply_objects")
        async def apply_objects(a: ApplyObjects) -> list[Applied]:
            world.calls.append("apply_objects canary")
            (m,) = a.manifests
            assert m["metadata"]["name"].endswith("-canary")
            assert m["spec"]["template"]["metadata"]["labels"]["version"] == "canary"
            created = not world.canary["exists"]
            if created:
                world.canary.update(exists=True, image=m["spec"]["template"]["spec"]["containers"][0]["image"],
                                    replicas=m["spec"]["replicas"])
            return [Applied(kind="Deployment", namespace=a.manifests[0]["metadata"]["namespace"],
                            name=m["metadata"]["name"], created=created)]

        @activity.defn(name="kubernetes.apply_release")
        async def apply_release(a: ApplyRelease) -> ApplyResult:
            if not a.target.deployment:
                return await primary_apply(a)
            world.calls.append("apply_release canary")
            world.canary.update(image=a.image, replicas=a.replicas)
            return ApplyResult(changed=True, generation=7)

        @activity.defn(name="kubernetes.wait_rollout")
        async def wait_rollout(w: WaitRollout) -> RolloutResult:
            if w.target.deployment:
                world.calls.append("wait_rollout canary")
                while world.canary_rollout_hangs:
                    activity.heartbeat("0/1 ready")
                    await asyncio.sleep(0.05)
                return RolloutResult(ready_replicas=world.canary["replicas"])
            if world.primary_rollout_fails and w.generation == 2:
                world.calls.append("wait_rollout")
                raise ApplicationError("shop-prod/shop: pod shop-x: CrashLoopBackOff",
                                       type="RolloutFailed", non_retryable=True)
            return await primary_wait(w)

        @activity.defn(name="kubernetes.scale")
        async def scale(s: ScaleDeployment) -> bool:
            world.calls.append(f"scale {s.target.name()} {s.replicas}")
            if not world.canary["exists"] or world.canary["replicas"] == s.replicas:
                return False
            world.canary["replicas"] = s.replicas
            return True

        @activity.defn(name="istio.set_routes")
        async def set_routes(r: RouteWeights) -> RouteWeights:
            world.calls.append("set_routes")
            assert r.authorization is not None or not (r.canary or r.canary_header or r.mirror), \
                "traffic sent to a canary without its authorization"
            world.route_log.append((r.stable, r.canary, r.canary_header))
            world.mirror_log.append(r.mirror)
            previous = world.routes or RouteWeights(env=r.env, namespace=r.namespace, service=r.service)
            world.routes = r
            return previous

        @activity.defn(name="prometheus.analyse")
        async def analyse(a: CanaryAnalysis) -> AnalysisResult:
            assert a.workload == f"{a.service}-canary" and a.interval, a  # the canary, over a window
            if world.query_fails:
                raise ApplicationError("Prometheus unreachable: ConnectError", type="Unavailable")
            values = world.values(world.analyses)
            world.analyses += 1
            return AnalysisResult(values=[MetricValue(name=m.name, value=values.get(m.name))
                                          for m in a.metrics])

        base.update({getattr(fn, "__temporal_activity_definition").name: fn for fn in (
            apply_objects, apply_release, wait_rollout, scale, set_routes, analyse)})
        return with_combined(list(base.values()))

    @property
    def weight(self) -> tuple[int, int, bool]:
        return self.route_log[-1] if self.route_log else (100, 0, False)
