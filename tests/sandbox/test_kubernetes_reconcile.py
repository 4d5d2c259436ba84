"""Kubernetes stand-in: the reconcile loop looks only at what may have changed. A settled
Deployment costs nothing per tick, yet anything a user does to it (or to what it owns), and
everything that happens with time alone (pods getting ready, a progress deadline, an image
pushed late, a CronJob's minute), still shows up as before.

These drive the simulation with a fake clock and no safety-net resync, so a change the
incremental reconcile missed would stay missed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from sandbox.common import Audit
from sandbox.kubernetes.app import KubernetesSim
from sandbox.kubernetes.batch import BatchController, job_condition
from sandbox.kubernetes.images import ImageInfo, ImageResolver
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.rollout import Controller
from sandbox.kubernetes.store import Store
from sandbox.kubernetes.traffic import Traffic
from sandbox.world import SandboxSettings

NS = resource_for_kind("Namespace")
DEPLOYMENTS = resource_for_kind("Deployment")
PODS = resource_for_kind("Pod")
SERVICES = resource_for_kind("Service")
CRONJOBS = resource_for_kind("CronJob")
JOBS = resource_for_kind("Job")
V1 = "registry.test/team/app@sha256:" + "1" * 64
V2 = "registry.test/team/app@sha256:" + "2" * 64
LATE = "registry.test/team/app@sha256:" + "3" * 64
TICK = 0.02


class Clock:
    def __init__(self, sim: KubernetesSim) -> None:
        self.sim = sim
        self.now = time.time()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK)):
            self.now += TICK
            self.sim.step(self.now)


def make_sim(seconds_per_replica: float = 0.0) -> tuple[KubernetesSim, Clock]:
    settings = SandboxSettings(seconds_per_replica=seconds_per_replica)
    store = Store(None, Audit(None))
    images = ImageResolver()
    for image in (V1, V2):
        images.by_ref[image] = ImageInfo("ok", {}, image.split("@")[1], checked=time.monotonic())
    # Not in the registry yet; never re-fetched in the test (the test "pushes" it later).
    images.by_ref[LATE] = ImageInfo("missing", message="manifest unknown",
                                    checked=time.monotonic() + 1e6)
    controller = Controller(store, images, settings)
    sim = KubernetesSim(store, images, controller, Traffic(store, controller.kubelet, 100.0),
                        BatchController(store, images, seconds_per_replica))
    for queue in (controller.queue, sim.batch.queue):  # type: ignore[union-attr]
        queue.resync_s = float("inf")
    return sim, Clock(sim)


def add_service(store: Store, ns: str, replicas: int, **spec: Any) -> None:
    store.create(NS, {"metadata": {"name": ns}})
    labels = {"app": "app", "version": "stable"}
    store.create(DEPLOYMENTS, {"metadata": {"name": "app", "namespace": ns}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": V1}]}}, **spec}})
    store.create(SERVICES, {"metadata": {"name": "app", "namespace": ns},
                            "spec": {"selector": {"app": "app"}, "ports": [{"port": 80}]}})


def set_image(store: Store, ns: str, image: str) -> None:
    d = store.get(DEPLOYMENTS, ns, "app")
    d["spec"]["template"]["spec"]["containers"][0]["image"] = image
    store.update(DEPLOYMENTS, d)


def progressing(store: Store, ns: str) -> dict[str, Any]:
    d = store.get(DEPLOYMENTS, ns, "app")
    return next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")


def rolled_out(store: Store, ns: str, image: str) -> bool:
    d = store.get(DEPLOYMENTS, ns, "app")
    want, status = d["spec"]["replicas"], d.get("status") or {}
    pods = store.iter(PODS, ns)
    return (status.get("updatedReplicas", 0) == status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want and len(pods) == want
            and all(p["spec"]["containers"][0]["image"] == image for p in pods)
            and progressing(store, ns)["reason"] == "NewReplicaSetAvailable")


def count_syncs(sim: KubernetesSim, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Namespaces each Deployment / ReplicaSet sync was for, from now on."""
    seen: Counter[str] = Counter()
    controller = sim.controller
    for owner, name in ((controller, "sync_deployment"), (controller, "sync_status")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda ns, n, now, real=real: (
            seen.update([ns]), real(ns, n, now))[1])
    real_rs = controller.kubelet.sync_replicaset
    monkeypatch.setattr(controller.kubelet, "sync_replicaset", lambda rs, now: (
        seen.update([rs["metadata"]["namespace"]]), real_rs(rs, now))[1])
    return seen


def test_settled_deployments_are_left_alone_until_something_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim, clock = make_sim()
    store = sim.store
    for i in range(20):
        add_service(store, f"s{i}", replicas=1 if i < 10 else 0)
    clock.run(0.5)
    assert all(rolled_out(store, f"s{i}", V1) for i in range(20))
    syncs = count_syncs(sim, monkeypatch)

    # Settled: ticks go by with no sync, and a watcher sees nothing (no new resourceVersion).
    rv = store.rv
    clock.run(2.0)
    assert store.rv == rv and not syncs
    assert all(rolled_out(store, f"s{i}", V1) for i in range(20))

    # A user's change unsettles that Deployment only; it rolls out as fast as ever (a new
    # ReplicaSet and its ready pod on one tick, the old one scaled down on the next), then
    # settles again.
    set_image(store, "s3", V2)
    clock.run(TICK)
    assert not rolled_out(store, "s3", V2)
    clock.run(TICK)
    assert rolled_out(store, "s3", V2)
    assert store.get(DEPLOYMENTS, "s3", "app")["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "2"
    clock.run(0.2)
    assert set(syncs) == {"s3"}
    syncs.clear()
    rv = store.rv
    clock.run(1.0)
    assert store.rv == rv and not syncs

    # So does a change to something it owns: a deleted pod is replaced.
    (pod,) = store.iter(PODS, "s5")
    store.delete(PODS, "s5", pod["metadata"]["name"])
    clock.run(0.5)
    (replacement,) = store.iter(PODS, "s5")
    assert replacement["metadata"]["name"] != pod["metadata"]["name"]
    assert rolled_out(store, "s5", V1) and set(syncs) == {"s5"}

    # A pod taken from its ReplicaSet (ownerReferences removed) is replaced, and left alone.
    orphan = store.get(PODS, "s7", store.iter(PODS, "s7")[0]["metadata"]["name"])
    orphan["metadata"]["ownerReferences"] = []
    store.update(PODS, orphan)
    clock.run(0.5)
    pods = {p["metadata"]["name"]: p for p in store.iter(PODS, "s7")}
    assert len(pods) == 2 and orphan["metadata"]["name"] in pods
    assert store.get(DEPLOYMENTS, "s7", "app")["status"]["readyReplicas"] == 1

    # And a scale-up of a Deployment at 0 replicas.
    d = store.get(DEPLOYMENTS, "s15", "app")
    d["spec"]["replicas"] = 2
    store.update(DEPLOYMENTS, d)
    clock.run(0.5)
    assert rolled_out(store, "s15", V1) and len(store.iter(PODS, "s15")) == 2


def test_time_alone_still_moves_rollouts_deadlines_and_late_images() -> None:
    sim, clock = make_sim(seconds_per_replica=0.3)
    store = sim.store
    add_service(store, "slow", replicas=3)
    add_service(store, "late", replicas=2, progressDeadlineSeconds=2)
    clock.run(0.5)  # the first of three replicas is ready after 0.3 s, the rest one by one
    assert store.get(DEPLOYMENTS, "slow", "app")["status"].get("readyReplicas") == 1
    clock.run(1.0)
    assert rolled_out(store, "slow", V1)

    set_image(store, "late", LATE)
    clock.run(0.5)
    waiting = [cs["state"]["waiting"]["reason"] for p in store.iter(PODS, "late")
               for cs in p["status"]["containerStatuses"] if "waiting" in cs["state"]]
    assert waiting == ["ImagePullBackOff"]
    assert progressing(store, "late")["status"] == "True"
    clock.run(2.0)  # nothing is written meanwhile, yet the deadline passes
    assert progressing(store, "late")["reason"] == "ProgressDeadlineExceeded"
    assert progressing(store, "late")["status"] == "False"

    # The image gets pushed: the pod that kept retrying starts, and the rollout completes.
    sim.images.by_ref[LATE] = ImageInfo("ok", {}, "sha256:" + "3" * 64, checked=time.monotonic())
    clock.run(2.0)
    assert rolled_out(store, "late", LATE)


def test_traffic_keeps_flowing_and_follows_changes() -> None:
    sim, clock = make_sim()
    store = sim.store
    add_service(store, "web", replicas=2)
    clock.run(0.5)

    def served() -> float:
        sim.traffic.advance(clock.now)
        return sum(s.count for k, s in sim.traffic.series.items() if k[0] == "web")

    before = served()
    clock.run(3.0)  # settled, so nothing is written, but requests keep coming: 100 rps
    assert served() - before == pytest.approx(300.0, rel=0.02)
    set_image(store, "web", V2)  # pods and versions change; the new ones serve
    clock.run(1.0)
    workloads = {k for k, s in sim.traffic.series.items() if k[0] == "web"}
    assert workloads == {("web", "app", "stable", "app")}
    d = store.get(DEPLOYMENTS, "web", "app")
    d["spec"]["replicas"] = 0
    store.update(DEPLOYMENTS, d)
    clock.run(0.5)
    stopped = served()
    clock.run(1.0)
    assert served() == stopped


def test_cronjob_runs_at_its_minute_without_any_write() -> None:
    sim, clock = make_sim()
    store = sim.store
    store.create(NS, {"metadata": {"name": "batch"}})
    clock.now = (clock.now // 60 + 1) * 60 - 1.0  # a second before a minute starts
    store.create(CRONJOBS, {"metadata": {"name": "nightly", "namespace": "batch"}, "spec": {
        "schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "job", "image": V1}]}}}}}})
    clock.run(0.5)
    assert store.iter(JOBS, "batch") == []
    clock.run(1.0)  # the minute starts: a Job, whose pod runs to completion
    (job,) = store.iter(JOBS, "batch")
    clock.run(1.0)
    job = store.get(JOBS, "batch", job["metadata"]["name"])
    assert job_condition(job) == "Complete" and job["status"]["succeeded"] == 1
    cronjob = store.get(CRONJOBS, "batch", "nightly")
    assert cronjob["status"]["lastSuccessfulTime"] == job["status"]["completionTime"]
