"""Kubernetes stand-in: simulated rollouts, as a user watching a Deployment sees them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from sandbox.registry.oci import build_image, push_image
from sandbox.serve import Sandbox
from tests.helpers import wait_until
from tests.sandbox.test_kubernetes import (api_client, box, deployment, kube, ns,  # noqa: F401
                                           push, start_box)

REVISION = "deployment.kubernetes.io/revision"


def condition(d: Any, kind: str) -> Any:
    return next((c for c in d.status.conditions or [] if c.type == kind), None)


def rolled_out(apps: client.AppsV1Api, ns: str, name: str) -> Any:
    d = apps.read_namespaced_deployment(name, ns)
    s = d.status
    want = d.spec.replicas
    progressing = condition(d, "Progressing")
    done = (s.observed_generation == d.metadata.generation and (s.updated_replicas or 0) == want
            and (s.available_replicas or 0) == want and (s.replicas or 0) == want
            and progressing is not None and progressing.reason == "NewReplicaSetAvailable")
    return d if done else None


def pods_waiting(core: client.CoreV1Api, ns: str, reason: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns).items
    return [p for p in pods if any(cs.state.waiting and cs.state.waiting.reason == reason
                                   for cs in p.status.container_statuses or [])]


def set_image(apps: client.AppsV1Api, ns: str, name: str, image: str) -> None:
    apps.patch_namespaced_deployment(name, ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": image}]}}}})


def test_good_rollout_then_update(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    v1, v2 = push(box, "team/good", "v1"), push(box, "team/good", "v2")
    apps.create_namespaced_deployment(ns, deployment("good", v1, replicas=3))
    d = wait_until(lambda: rolled_out(apps, ns, "good"), what="first rollout")
    assert condition(d, "Available").status == "True"
    assert condition(d, "Available").reason == "MinimumReplicasAvailable"
    assert condition(d, "Progressing").status == "True"
    assert d.metadata.annotations[REVISION] == "1"
    (rs,) = apps.list_namespaced_replica_set(ns).items
    assert rs.metadata.annotations[REVISION] == "1"
    assert rs.metadata.name == f"good-{rs.metadata.labels['pod-template-hash']}"
    pods = core.list_namespaced_pod(ns, label_selector="app=good").items
    assert len(pods) == 3
    assert all(p.status.phase == "Running" and p.status.container_statuses[0].ready for p in pods)

    set_image(apps, ns, "good", v2)
    d = wait_until(lambda: rolled_out(apps, ns, "good"), what="second rollout")
    assert d.metadata.annotations[REVISION] == "2" and d.status.observed_generation == 2
    by_revision = {r.metadata.annotations[REVISION]: r
                   for r in apps.list_namespaced_replica_set(ns).items}
    assert by_revision["1"].spec.replicas == 0 and by_revision["2"].spec.replicas == 3
    images = {p.spec.containers[0].image for p in core.list_namespaced_pod(ns).items}
    assert images == {v2}


def test_missing_image_backs_off_then_deadline_exceeded(box: Sandbox, kube: client.ApiClient,
                                                        ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    good = push(box, "team/pull", "v1")
    # progress_deadline_scale=0.01 in this module's sandbox: 100 s -> 1 s.
    apps.create_namespaced_deployment(ns, deployment("pull", good, replicas=2,
                                                     progressDeadlineSeconds=100))
    wait_until(lambda: rolled_out(apps, ns, "pull"), what="first rollout")
    missing = box.urls["registry"].removeprefix("http://") + "/team/pull:never-pushed"
    set_image(apps, ns, "pull", missing)
    wait_until(lambda: pods_waiting(core, ns, "ImagePullBackOff"), what="ImagePullBackOff")

    def deadline_exceeded() -> Any:
        d = apps.read_namespaced_deployment("pull", ns)
        c = condition(d, "Progressing")
        return d if c.status == "False" and c.reason == "ProgressDeadlineExceeded" else None

    d = wait_until(deadline_exceeded, what="ProgressDeadlineExceeded")
    assert "has timed out progressing" in condition(d, "Progressing").message
    # The old version keeps serving: maxUnavailable 25% of 2 rounds down to 0.
    assert d.status.available_replicas == 2 and condition(d, "Available").status == "True"
    # Pushing the image later heals the rollout, as the kubelet keeps retrying.
    asyncio.run(push_image(box.urls["registry"], "team/pull", "never-pushed",
                           build_image({"x": b"late"}, {}, created="2026-01-01T00:00:00Z")))
    wait_until(lambda: rolled_out(apps, ns, "pull"), what="rollout after the push")


def test_unreachable_registry_is_image_pull_backoff(kube: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("far", "127.0.0.1:9/x/far:v1", replicas=1))
    (pod,) = wait_until(lambda: pods_waiting(core, ns, "ImagePullBackOff"), what="back-off")
    assert pod.status.phase == "Pending" and not pod.status.container_statuses[0].ready


def test_crashing_image_crash_loops(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    bad = push(box, "team/crash", "v1", {"io.kepler.sandbox.crash": "true"})
    apps.create_namespaced_deployment(ns, deployment("crash", bad, replicas=1,
                                                     progressDeadlineSeconds=100))
    (pod,) = wait_until(lambda: pods_waiting(core, ns, "CrashLoopBackOff"), what="crash loop")
    cs = pod.status.container_statuses[0]
    assert pod.status.phase == "Running" and not cs.ready and cs.restart_count >= 1
    assert cs.last_state.terminated.exit_code == 1

    def timed_out() -> bool:
        c = condition(apps.read_namespaced_deployment("crash", ns), "Progressing")
        return c.reason == "ProgressDeadlineExceeded"

    wait_until(timed_out, what="ProgressDeadlineExceeded")
    d = apps.read_namespaced_deployment("crash", ns)
    assert not d.status.available_replicas and condition(d, "Available").status == "False"


def test_revision_history_limit(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    images = [push(box, "team/hist", f"v{i}") for i in range(1, 5)]
    apps.create_namespaced_deployment(ns, deployment("hist", images[0], replicas=1,
                                                     revisionHistoryLimit=2))
    wait_until(lambda: rolled_out(apps, ns, "hist"), what="v1")
    for image in images[1:]:
        set_image(apps, ns, "hist", image)
        wait_until(lambda: rolled_out(apps, ns, "hist"), what=image)

    def revisions() -> list[str]:
        return sorted(r.metadata.annotations[REVISION]
                      for r in apps.list_namespaced_replica_set(ns).items)

    assert wait_until(lambda: revisions() == ["2", "3", "4"], what="old revisions pruned")


def test_watch_a_rollout_to_completion(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    image = push(box, "team/watched", "v1")
    seen: list[str] = []

    def run() -> None:
        w = watch.Watch()
        for event in w.stream(apps.list_namespaced_deployment, ns, timeout_seconds=20):
            for c in event["object"].status.conditions or []:
                if c.type == "Progressing" and c.reason not in seen:
                    seen.append(c.reason)
            if "NewReplicaSetAvailable" in seen:
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    apps.create_namespaced_deployment(ns, deployment("watched", image, replicas=2))
    t.join(timeout=20)
    assert seen[-1] == "NewReplicaSetAvailable"
    assert set(seen) <= {"NewReplicaSetCreated", "ReplicaSetUpdated", "NewReplicaSetAvailable"}


def test_rollout_resumes_after_restart(tmp_path: Path) -> None:
    first = start_box(tmp_path, seconds_per_replica=0.3)
    try:
        kube = api_client(first)
        image = push(first, "team/resume", "v1")
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": "resume"}})
        apps = client.AppsV1Api(kube)
        apps.create_namespaced_deployment("resume", deployment("r", image, replicas=4))
        wait_until(lambda: (apps.read_namespaced_deployment("r", "resume").status
                            .ready_replicas or 0) >= 1, what="first replica ready")
        registry_port = int(first.urls["registry"].rsplit(":", 1)[1])
    finally:
        first.stop()
    # Same registry port: the image references name it.
    second = start_box(tmp_path, seconds_per_replica=0.05, ports={"registry": registry_port})
    try:
        apps = client.AppsV1Api(api_client(second))
        d = wait_until(lambda: rolled_out(apps, "resume", "r"), what="rollout after restart")
        assert d.metadata.annotations[REVISION] == "1"
        assert len(apps.list_namespaced_replica_set("resume").items) == 1
    finally:
        second.stop()
