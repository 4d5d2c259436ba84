"""The sandbox world on the real control plane: kwok plays Kepler's pod stages
(sandbox/cluster/stages.yaml), the bridge (sandbox/cluster/bridge.py) marks each pod from its
image's registry labels, and the real controllers make the real conditions of it; the traffic
simulation and the sandbox's Prometheus follow the real objects."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from kepler import promql
from sandbox.cluster import RealCluster, RealWorld
from sandbox.cluster.bridge import BEHAVIOUR, READY_AT, judge, observe
from sandbox.kubernetes.images import ImageInfo
from sandbox.world import SandboxSettings
from tests.helpers import eventually, wait_until
from tests.sandbox.test_kubernetes import deployment, push

realk8s = pytest.mark.realk8s

ISTIO = "networking.istio.io"
DEADLINE_S = 10  # progressDeadlineSeconds of the Deployments that never become available


@pytest.fixture(scope="module")
def world(sandbox_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealWorld]:
    settings = SandboxSettings(standins=("registry", "prometheus"), seconds_per_replica=0.3, traffic_rps=100.0)
    with RealWorld(tmp_path_factory.mktemp("real-world"), settings, cluster=sandbox_cluster) as real_world:
        yield real_world


@pytest.fixture(scope="module")
def kube(world: RealWorld) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(world.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def ns(kube: client.ApiClient) -> Iterator[str]:
    name = f"w-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def pods(kube: client.ApiClient, ns: str, app: str) -> list[Any]:
    return client.CoreV1Api(kube).list_namespaced_pod(ns, label_selector=f"app={app}").items


def conditions(obj: Any) -> dict[str, Any]:
    return {c.type: c for c in obj.status.conditions or []}


def waiting(pod: Any) -> set[str]:
    return {s.state.waiting.reason for s in pod.status.container_statuses or [] if s.state.waiting}


def deadline_exceeded(kube: client.ApiClient, ns: str, name: str) -> bool:
    d = client.AppsV1Api(kube).read_namespaced_deployment(name, ns)
    progressing = conditions(d).get("Progressing")
    return bool(progressing and progressing.reason == "ProgressDeadlineExceeded")


@realk8s
def test_an_image_that_pulls_becomes_available_paced_per_replica(world: RealWorld, kube: client.ApiClient,
                                                                ns: str) -> None:
    image = push(world.sandbox, "team/web", "v1")
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("web", image, replicas=3))

    def available() -> bool:
        d = apps.read_namespaced_deployment("web", ns)
        return conditions(d)["Available"].status == "True" and d.status.available_replicas == 3

    eventually(available, "deployment web Available with 3 replicas")
    ready_at = []
    for pod in pods(kube, ns, "web"):
        assert pod.metadata.labels[BEHAVIOUR] == "ok"
        assert conditions(pod)["Ready"].status == "True" and pod.status.phase == "Running"
        assert pod.status.pod_ip and pod.status.container_statuses[0].state.running
        ready_at.append(pod.metadata.annotations[READY_AT])
    # like the stand-in's kubelet: one replica after another, seconds_per_replica apart
    assert len(set(ready_at)) == 3, ready_at


@realk8s
def test_a_crashing_image_crash_loops_and_the_rollout_exceeds_its_deadline(
        world: RealWorld, kube: client.ApiClient, ns: str) -> None:
    image = push(world.sandbox, "team/crash", "v1", {"io.kepler.sandbox.crash": "true"})
    client.AppsV1Api(kube).create_namespaced_deployment(
        ns, deployment("crash", image, replicas=1, progressDeadlineSeconds=DEADLINE_S))

    def restarting() -> Any:
        found = pods(kube, ns, "crash")
        return found and "CrashLoopBackOff" in waiting(found[0]) \
            and found[0].status.container_statuses[0].restart_count >= 2 and found[0]

    pod = eventually(restarting, "the crash pod in CrashLoopBackOff, restarted twice")
    assert pod.status.phase == "Running" and pod.metadata.labels[BEHAVIOUR] == "crash"
    status = pod.status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 1 and not status.ready
    core = client.CoreV1Api(kube)
    eventually(lambda: "BackOff" in {e.reason for e in core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={pod.metadata.name}").items}, "a BackOff event for the pod")
    eventually(lambda: deadline_exceeded(kube, ns, "crash"), "ProgressDeadlineExceeded", timeout=DEADLINE_S + 60)
    d = client.AppsV1Api(kube).read_namespaced_deployment("crash", ns)
    assert conditions(d)["Available"].status == "False"
    assert not d.status.available_replicas and not d.status.ready_replicas
    assert pods(kube, ns, "crash")[0].status.container_statuses[0].restart_count > status.restart_count


@realk8s
def test_an_image_missing_from_the_registry_cannot_pull_until_it_is_pushed(
        world: RealWorld, kube: client.ApiClient, ns: str) -> None:
    registry = world.urls["registry"].removeprefix("http://")
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(
        ns, deployment("ghost", f"{registry}/team/ghost:v1", replicas=1, progressDeadlineSeconds=DEADLINE_S))

    def pull_failing() -> Any:
        found = pods(kube, ns, "ghost")
        return found and waiting(found[0]) & {"ErrImagePull", "ImagePullBackOff"} and found[0]

    pod = eventually(pull_failing, "the pod failing to pull")
    assert pod.status.phase == "Pending" and pod.metadata.labels[BEHAVIOUR] == "missing"
    assert "team/ghost" in pod.status.container_statuses[0].state.waiting.message
    eventually(lambda: deadline_exceeded(kube, ns, "ghost"), "ProgressDeadlineExceeded", timeout=DEADLINE_S + 60)
    assert conditions(pods(kube, ns, "ghost")[0])["Ready"].status == "False"
    # as with the stand-in, pushing the image heals the pod: the bridge looks again
    push(world.sandbox, "team/ghost", "v1")
    eventually(lambda: conditions(apps.read_namespaced_deployment("ghost", ns))["Available"].status == "True",
               "the Deployment Available once the image is pushed")


@realk8s
def test_an_unready_image_runs_but_is_never_ready(world: RealWorld, kube: client.ApiClient, ns: str) -> None:
    image = push(world.sandbox, "team/slow", "v1", {"io.kepler.sandbox.unready": "true"})
    client.AppsV1Api(kube).create_namespaced_deployment(
        ns, deployment("slow", image, replicas=1, progressDeadlineSeconds=DEADLINE_S))

    def started() -> Any:
        found = pods(kube, ns, "slow")
        return found and found[0].status.phase == "Running" and found[0]

    pod = eventually(started, "the unready pod Running")
    assert pod.status.container_statuses[0].state.running and not pod.status.container_statuses[0].ready
    assert conditions(pod)["Ready"].status == "False"
    # the deadline passing is the proof it never became ready meanwhile
    eventually(lambda: deadline_exceeded(kube, ns, "slow"), "ProgressDeadlineExceeded", timeout=DEADLINE_S + 60)
    assert conditions(pods(kube, ns, "slow")[0])["Ready"].status == "False"


@realk8s
def test_a_pod_waits_in_container_creating_until_its_image_is_judged(
        world: RealWorld, kube: client.ApiClient, ns: str) -> None:
    """A registry that accepts connections but never answers: the bridge's lookup times out
    (pending, asked again each second) and the pod is never marked, so it never starts."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        image = f"127.0.0.1:{silent.getsockname()[1]}/team/limbo:v1"
        client.AppsV1Api(kube).create_namespaced_deployment(ns, deployment("limbo", image, replicas=1))
        bridge = world.sandbox.bridge

        def looked_up() -> bool:
            seen = bridge._seen.get(image)
            return seen is not None and seen.state == "pending"

        eventually(looked_up, "the bridge's lookup of the image to time out")
        pod = eventually(lambda: pods(kube, ns, "limbo") and pods(kube, ns, "limbo")[0], "the pod")
        assert waiting(pod) == {"ContainerCreating"} and pod.status.phase == "Pending"
        assert BEHAVIOUR not in (pod.metadata.labels or {})
        assert conditions(pod)["Ready"].status == "False"


def job(name: str, image: str, restart_policy: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": restart_policy, "containers": [{"name": "run", "image": image}]}}}}


@realk8s
@pytest.mark.parametrize("restart_policy", ["Never", "OnFailure"])
def test_jobs_succeed_with_a_good_image_and_fail_with_a_crashing_one(
        world: RealWorld, kube: client.ApiClient, ns: str, restart_policy: str) -> None:
    good = push(world.sandbox, "team/batch", "v1")
    bad = push(world.sandbox, "team/batch", "v2", {"io.kepler.sandbox.crash": "true"})
    batch = client.BatchV1Api(kube)
    batch.create_namespaced_job(ns, job("good", good, restart_policy))
    batch.create_namespaced_job(ns, job("bad", bad, restart_policy))

    def finished(name: str) -> str | None:
        found = conditions(batch.read_namespaced_job(name, ns))
        return next((t for t in ("Complete", "Failed") if t in found and found[t].status == "True"), None)

    assert eventually(lambda: finished("good"), "job good finished") == "Complete"
    assert eventually(lambda: finished("bad"), "job bad finished") == "Failed"
    core = client.CoreV1Api(kube)
    good_pod = core.list_namespaced_pod(ns, label_selector="job-name=good").items[0]
    assert good_pod.status.phase == "Succeeded"
    assert good_pod.status.container_statuses[0].state.terminated.exit_code == 0
    bad_pods = core.list_namespaced_pod(ns, label_selector="job-name=bad").items
    assert bad_pods and all(p.status.phase == "Failed" for p in bad_pods)
    assert bad_pods[0].status.container_statuses[0].state.terminated.exit_code == 1


@realk8s
def test_pod_logs_are_the_simulated_lines_served_by_kwok(world: RealWorld, kube: client.ApiClient,
                                                        ns: str, sandbox_cluster: RealCluster) -> None:
    image = push(world.sandbox, "team/talk", "v1")
    crash = push(world.sandbox, "team/talk", "v2", {"io.kepler.sandbox.crash": "true"})
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("talk", image, replicas=1))
    apps.create_namespaced_deployment(ns, deployment("oops", crash, replicas=1))

    def log_of(app: str, needle: str) -> str | None:
        found = pods(kube, ns, app)
        text = core.read_namespaced_pod_log(found[0].metadata.name, ns) if found else ""
        return text if needle in text else None

    text = eventually(lambda: log_of("talk", '"GET /'), "a request line in the serving pod's log")
    assert "app: starting (image sha256:" in text and "app: listening on :8080" in text
    text = eventually(lambda: log_of("oops", "panic"), "the crashing pod's panic")
    assert "app: panic: the image is labelled io.kepler.sandbox.crash=true" in text
    name = pods(kube, ns, "talk")[0].metadata.name
    out = sandbox_cluster.run_kubectl("logs", "-n", ns, name, "--tail=1").stdout
    assert out.count("\n") == 1 and '"GET /' in out, out


@realk8s
def test_prometheus_reports_the_virtual_service_split_between_subsets(
        world: RealWorld, kube: client.ApiClient, ns: str) -> None:
    """Stable serves well, the canary fails every request: with a 90/10 split the success
    rate over both is the stable share."""
    stable = push(world.sandbox, "team/svc", "v1", {"io.kepler.sandbox.latency-ms": "100"})
    canary = push(world.sandbox, "team/svc", "v2", {"io.kepler.sandbox.error-rate": "1"})
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("svc", stable, replicas=2, app="svc"))
    apps.create_namespaced_deployment(ns, deployment("svc-canary", canary, replicas=1, version="canary", app="svc"))
    core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "svc"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    custom = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(ISTIO, "v1", ns, "destinationrules", {
        "apiVersion": f"{ISTIO}/v1", "kind": "DestinationRule", "metadata": {"name": "svc"},
        "spec": {"host": "svc", "subsets": [{"name": "stable", "labels": {"version": "stable"}},
                                            {"name": "canary", "labels": {"version": "canary"}}]}})
    custom.create_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", {
        "apiVersion": f"{ISTIO}/v1", "kind": "VirtualService", "metadata": {"name": "svc"},
        "spec": {"hosts": ["svc"], "http": [{"route": [
            {"destination": {"host": "svc", "subset": "stable"}, "weight": 90},
            {"destination": {"host": "svc", "subset": "canary"}, "weight": 10}]}]}})

    def rate(workloads: str) -> float | None:
        q = promql.render(promql.REQUEST_SUCCESS_RATE, ns, workloads, "1m")
        body = httpx.get(f"{world.urls['prometheus']}/api/v1/query", params={"query": q}, timeout=10).json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def both_serving() -> float | None:
        value = rate("svc|svc-canary")
        return value if value is not None and rate("svc-canary") is not None and abs(value - 90) < 0.5 else None

    assert abs(eventually(both_serving, "a 90 % success rate over stable and canary") - 90) < 0.5
    assert rate("svc") == 100 and rate("svc-canary") == 0
    # the counts behind it: 9 requests to the stable subset for each one to the canary, from
    # now on (before, the canary's pod may have become ready a little after the stable ones)
    series = world.sandbox.bridge.traffic.series

    def served() -> dict[str, float]:
        return {key[1]: s.count for key, s in list(series.items()) if key[0] == ns}

    before = served()

    def grown() -> dict[str, float] | None:
        now = served()
        delta = {k: now[k] - before.get(k, 0.0) for k in now}
        return delta if delta.get("svc-canary", 0.0) >= 20 else None

    delta = eventually(grown, "20 more requests to the canary")
    assert abs(delta["svc"] / delta["svc-canary"] - 9) < 0.01, delta
    latency = promql.render(promql.REQUEST_DURATION, ns, "svc", "1m")
    body = httpx.get(f"{world.urls['prometheus']}/api/v1/query", params={"query": latency}, timeout=10).json()
    assert abs(float(body["data"]["result"][0]["value"][1]) - 100) < 1


@realk8s
def test_python_m_sandbox_starts_and_stops_a_real_cluster(cluster_binaries: Path, tmp_path: Path) -> None:
    """What `kepler dev up` would run: one process with the stand-ins and a real cluster;
    SIGTERM stops both."""
    urls_file, state = tmp_path / "urls.json", tmp_path / "state"
    proc = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "sandbox", "--state-dir", str(state), "--urls-file", str(urls_file),
         "--start-real-cluster"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: urls_file.exists() or proc.poll() is not None, timeout=120, what="the urls file")
        assert proc.poll() is None, proc.communicate()[0]
        urls = json.loads(urls_file.read_text())
        assert "kubernetes" not in urls and {"registry", "prometheus"} <= set(urls)
        kubeconfig = state / "real-cluster" / "kubeconfig"
        api = config.new_client_from_config(config_file=str(kubeconfig))

        class Box:  # what `push` reads of a Sandbox
            pass

        box = Box()
        box.urls = urls  # type: ignore[attr-defined]
        image = push(box, "team/cli", "v1")  # type: ignore[arg-type]
        apps = client.AppsV1Api(api)
        apps.create_namespaced_deployment("default", deployment("cli", image, replicas=1))
        eventually(lambda: apps.read_namespaced_deployment("cli", "default").status.available_replicas == 1,
                   "the deployment available")
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        api.close()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "export KUBECONFIG=" in out
    port = int(server.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- the pieces, without a cluster ---------------------------------------------------------------

def test_stages_cover_every_behaviour_the_bridge_judges() -> None:
    from sandbox.cluster.real import SANDBOX_STAGES

    stages = list(yaml.safe_load_all(SANDBOX_STAGES.read_text()))
    names = [s["metadata"]["name"] for s in stages]
    assert len(names) == len(set(names)) and all(s["kind"] == "Stage" for s in stages)
    assert {s["spec"]["resourceRef"]["kind"] for s in stages} == {"Pod"}
    marked = set()
    for stage in stages:
        selector = stage["spec"]["selector"]
        marked |= {(selector.get("matchLabels") or {}).get(BEHAVIOUR)} - {None}
        for e in selector.get("matchExpressions") or []:
            if BEHAVIOUR in e["key"]:
                marked |= set(e["values"])
    infos = {"ok": ImageInfo("ok"), "missing": ImageInfo("missing"),
             "crash": ImageInfo("ok", {"io.kepler.sandbox.crash": "true"}),
             "unready": ImageInfo("ok", {"io.kepler.sandbox.unready": "true"})}
    assert {judge([info]) for info in infos.values()} == marked == set(infos)
    assert judge([infos["ok"], ImageInfo("pending")]) is None
    assert judge([infos["unready"], infos["crash"]]) == "crash"


def _pod(phase: str, states: list[dict[str, Any]], ready: bool = False, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {BEHAVIOUR: "ok"},
                         "annotations": {"sandbox.kepler.dev/finish-at": "2026-01-01T00:00:10.500000Z"},
                         "ownerReferences": [{"kind": "Job", "name": "nightly"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}], **spec},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"name": "c", "state": s} for s in states]}}


def test_observe_follows_the_pod_status_as_the_stand_in_kubelet_would() -> None:
    sim: dict[str, Any] = {}
    running = {"running": {"startedAt": "2026-01-01T00:00:05Z"}}
    observe(_pod("Pending", [{"waiting": {"reason": "ContainerCreating"}}]), sim, 1.0)
    assert sim["state"] == "pending"
    observe(_pod("Running", [running], ready=True), sim, 2.0)
    assert sim["state"] == "running" and sim["started"] == 1767225605.0 and "job" not in sim
    observe(_pod("Running", [running]), sim, 3.0)
    assert sim["state"] == "unready"
    observe(_pod("Running", [{"waiting": {"reason": "CrashLoopBackOff"}}]), sim, 4.0)
    assert sim["state"] == "crash" and sim["started"] == 4.0
    observe(_pod("Pending", [{"waiting": {"reason": "ImagePullBackOff"}}]), sim, 5.0)
    assert sim["state"] == "missing"
    job: dict[str, Any] = {}
    observe(_pod("Running", [running], restartPolicy="Never"), job, 6.0)
    assert job == {"job": "nightly", "outcome": "succeeded", "finished": 1767225610.5, "state": "running",
                   "started": 1767225605.0}
    observe(_pod("Succeeded", [{"terminated": {"finishedAt": "2026-01-01T00:00:11Z"}}], restartPolicy="Never"),
            job, 7.0)
    assert job["state"] == "succeeded" and job["finished"] == 1767225611.0


def test_the_bridge_client_reads_a_kubeconfig(tmp_path: Path) -> None:
    from sandbox.cluster.kubeapi import KubeApi, resource_path
    from sandbox.kubernetes.pods import PODS, REPLICASETS

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}))
    api = KubeApi.from_kubeconfig(path)
    assert api.server == "https://127.0.0.1:6443"
    assert api.client.headers["Authorization"] == "Bearer s3cret"
    assert resource_path(PODS, "n", "p") == "/api/v1/namespaces/n/pods/p"
    assert resource_path(REPLICASETS) == "/apis/apps/v1/replicasets"
    asyncio.run(api.aclose())
