"""The real control plane (sandbox/cluster): kube-apiserver, controller manager and scheduler
from k8s.io/kubernetes, with kwok playing the nodes. What a stand-in might get wrong is checked
against the real thing here: kubectl's protobuf requests, Deployment rollout revisions, CRDs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.cluster import ClusterStartError, RealCluster, binaries_dir
from tests.helpers import eventually

pytestmark = pytest.mark.realk8s

REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture(scope="module")
def api_client(real_cluster: RealCluster) -> Iterator[Any]:
    """The Python kubernetes client, configured from the cluster's kubeconfig file."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(real_cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    real_cluster.run_kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        real_cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_kubectl_deployment_becomes_available_on_the_kwok_node(real_cluster: RealCluster, api_client: Any) -> None:
    from kubernetes import client

    kubectl = real_cluster.kubectl
    assert kubectl.parent == binaries_dir(), "the test drives the kubectl built with the control plane"
    version = real_cluster.run_kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.36' in version, version

    try:
        real_cluster.run_kubectl("create", "ns", "x")
        real_cluster.run_kubectl("create", "deployment", "web", "--image=registry.example/web:1", "--replicas=2", "-n", "x")

        apps = client.AppsV1Api(api_client)

        def available() -> bool:
            d = apps.read_namespaced_deployment("web", "x")
            conditions = {c.type: c.status for c in d.status.conditions or []}
            return conditions.get("Available") == "True" and d.status.available_replicas == 2

        eventually(available, "deployment x/web Available with 2 replicas")

        core = client.CoreV1Api(api_client)
        pods = core.list_namespaced_pod("x", label_selector="app=web").items
        assert len(pods) == 2
        for pod in pods:
            assert pod.status.phase == "Running", pod.status
            assert pod.spec.node_name in real_cluster.node_names
            node = core.read_node(pod.spec.node_name)
            assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
            assert node.status.allocatable["pods"] == "1500", "the status the node was created with is kept"
            assert pod.status.pod_ip, "kwok gives each running pod an IP"
            ready = {c.type: c.status for c in pod.status.conditions}
            assert ready.get("Ready") == "True"
            assert pod.spec.containers[0].image == "registry.example/web:1"
        # kubectl's own view agrees (it wrote protobuf bodies; it reads server-side Tables)
        out = real_cluster.run_kubectl("get", "pods", "-n", "x", "-o", "wide").stdout
        assert out.count("Running") == 2, out
    finally:
        real_cluster.run_kubectl("delete", "ns", "x", "--wait=false", check=False)


def test_istio_virtual_service_round_trips_through_custom_objects(api_client: Any, namespace: str) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {
            "hosts": ["web"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "web", "subset": "stable"}, "weight": 90},
                        {"destination": {"host": "web", "subset": "canary"}, "weight": 10},
                    ]
                }
            ],
        },
    }
    created = custom.create_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", body)
    assert created["metadata"]["uid"]
    got = custom.get_namespaced_custom_object("networking.istio.io", "v1", namespace, "virtualservices", "web")
    assert got["spec"] == body["spec"]
    assert got["metadata"]["resourceVersion"]
    # the other served version reads the same object
    beta = custom.get_namespaced_custom_object("networking.istio.io", "v1beta1", namespace, "virtualservices", "web")
    assert beta["spec"]["http"][0]["route"][1]["weight"] == 10


def test_image_patch_makes_a_second_replicaset_with_revision_2(api_client: Any, namespace: str) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(api_client)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "api", "image": "registry.example/api:1"}]},
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)

    def replicasets() -> list[Any]:
        return apps.list_namespaced_replica_set(namespace, label_selector="app=api").items

    first = eventually(lambda: [rs for rs in replicasets() if rs.status.ready_replicas == 1], "first ReplicaSet ready")
    assert first[0].metadata.annotations[REVISION] == "1"

    apps.patch_namespaced_deployment(
        "api", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "registry.example/api:2"}]}}}}
    )

    def rolled() -> dict[str, Any] | None:
        by_revision = {rs.metadata.annotations.get(REVISION): rs for rs in replicasets()}
        new = by_revision.get("2")
        if len(by_revision) != 2 or new is None or new.status.ready_replicas != 1:
            return None
        return by_revision

    by_revision = eventually(rolled, "a second ReplicaSet, revision 2, ready")
    assert by_revision["2"].spec.template.spec.containers[0].image == "registry.example/api:2"
    assert by_revision["1"].spec.template.spec.containers[0].image == "registry.example/api:1"
    assert by_revision["1"].metadata.name != by_revision["2"].metadata.name
    eventually(lambda: replicasets() and by_revision["1"].metadata.name in
               {rs.metadata.name for rs in replicasets() if (rs.spec.replicas or 0) == 0},
               "the old ReplicaSet scaled to 0")
    d = apps.read_namespaced_deployment("api", namespace)
    assert d.metadata.annotations[REVISION] == "2"


def test_a_component_that_fails_to_start_is_reported_with_its_log(
    real_cluster: RealCluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uses the session cluster only to know the binaries are built; starts (and fails) its own."""
    monkeypatch.setattr(RealCluster, "_etcd_args", lambda self: ["--no-such-flag-for-etcd"])
    spawned: list[Any] = []
    spawn = RealCluster._spawn

    def recording_spawn(self: RealCluster, name: str, args: list[str]) -> Any:
        spawned.append(spawn(self, name, args))
        return spawned[-1]

    monkeypatch.setattr(RealCluster, "_spawn", recording_spawn)
    cluster = RealCluster(tmp_path / "broken", start_timeout=60)
    with pytest.raises(ClusterStartError) as failure:
        cluster.start()
    message = str(failure.value)
    assert "etcd exited" in message
    assert "no-such-flag-for-etcd" in message, message
    assert [p.name for p in spawned] == ["etcd"]
    assert cluster.procs == [] and all(p.popen.poll() is not None for p in spawned), "start() stops what it started"
    assert (tmp_path / "broken" / "logs" / "etcd.log").is_file()
