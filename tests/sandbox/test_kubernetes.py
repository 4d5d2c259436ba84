"""Kubernetes stand-in: the API as the official client sees it (CRUD, errors,
patches, selectors, cascades, watch, Istio objects, faults, restart).

The helpers at the top are shared by the other test_sandbox_kubernetes_* modules.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sandbox.registry.oci import build_image, push_image
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.helpers import wait_until

STANDINS = ("registry", "kubernetes", "prometheus")


def start_box(state_dir: Path, **overrides: Any) -> Sandbox:
    settings = SandboxSettings(state_dir=state_dir, standins=STANDINS,
                               seconds_per_replica=0.05, traffic_rps=100.0)
    for key, value in overrides.items():
        setattr(settings, key, value)
    return Sandbox(settings).start()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sandbox = start_box(tmp_path_factory.mktemp("kube"), progress_deadline_scale=0.01)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def api_client(box: Sandbox) -> client.ApiClient:
    return client.ApiClient(client.Configuration(host=box.urls["kubernetes"]))


@pytest.fixture
def kube(box: Sandbox) -> client.ApiClient:
    return api_client(box)


@pytest.fixture
def ns(kube: client.ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


def push(box: Sandbox, repository: str, tag: str, labels: dict[str, str] | None = None) -> str:
    """Push a tiny image to the sandbox registry; returns `host:port/repo@digest`."""
    image = build_image({"app.txt": f"{repository}:{tag}".encode()}, labels or {},
                        created="2026-01-01T00:00:00Z")
    registry = box.urls["registry"]
    digest = asyncio.run(push_image(registry, repository, tag, image))
    return f"{registry.removeprefix('http://')}/{repository}@{digest}"


def deployment(name: str, image: str, replicas: int = 2, version: str = "stable",
               app: str | None = None, **spec: Any) -> dict[str, Any]:
    labels = {"app": app or name, "version": version}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": app or name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image,
                                                           "ports": [{"containerPort": 8080}]}]}},
                     **spec}}


def status_body(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


# -- CRUD and errors ----------------------------------------------------------------------

def test_configmap_crud_with_resource_versions(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    created = core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"},
                                                     "data": {"a": "1"}})
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.resource_version
    read = core.read_namespaced_config_map("cfg", ns)
    assert read.data == {"a": "1"}
    read.data["a"] = "2"
    replaced = core.replace_namespaced_config_map("cfg", ns, read)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    listed = core.list_namespaced_config_map(ns)
    assert [c.metadata.name for c in listed.items] == ["cfg"]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)
    core.delete_namespaced_config_map("cfg", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("cfg", ns)
    assert e.value.status == 404


def test_stale_resource_version_conflicts(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    first = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    second = core.read_namespaced_config_map("c", ns)
    second.data = {"k": "2"}
    core.replace_namespaced_config_map("c", ns, second)
    first.data = {"k": "3"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", ns, first)
    body = status_body(e.value)
    assert e.value.status == 409 and body["reason"] == "Conflict"
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert core.read_namespaced_config_map("c", ns).data == {"k": "2"}


def test_already_exists_not_found_and_invalid_name(kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("web", "127.0.0.1:1/x/web:v1", replicas=0))
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(ns, deployment("web", "127.0.0.1:1/x/web:v1"))
    assert e.value.status == 409 and status_body(e.value)["reason"] == "AlreadyExists"
    assert status_body(e.value)["details"] == {"name": "web", "group": "apps",
                                               "kind": "deployments"}
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("nope", ns)
    body = status_body(e.value)
    assert e.value.status == 404 and body["message"] == 'deployments.apps "nope" not found'
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment(ns, deployment("Bad_Name", "x.io/a:b"))
    body = status_body(e.value)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123 subdomain" in body["message"]
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(kube).create_namespaced_service(ns, {
            "metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}})
    assert e.value.status == 422 and "DNS-1035" in status_body(e.value)["message"]


def test_invalid_labels_and_selector_mismatch(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "c", "labels": {
            "bad key!": "v", "ok": "-bad-value"}}})
    fields = [c["field"] for c in status_body(e.value)["details"]["causes"]]
    assert e.value.status == 422 and fields == ["metadata.labels", "metadata.labels"]
    bad = deployment("web", "x.io/a:b")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiException) as e:
        client.AppsV1Api(kube).create_namespaced_deployment(ns, bad)
    assert e.value.status == 422
    assert "`selector` does not match template `labels`" in status_body(e.value)["message"]


def test_namespace_must_exist(kube: client.ApiClient) -> None:
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(kube).create_namespaced_config_map("missing-ns", {"metadata": {"name": "c"}})
    assert e.value.status == 404


def test_generation_bumps_on_spec_change_only(kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    d = apps.create_namespaced_deployment(ns, deployment("gen", "127.0.0.1:1/x/g:v1", replicas=0))
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"metadata": {"labels": {"team": "a"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", ns, {"spec": {"replicas": 0,
                                                              "minReadySeconds": 1}})
    assert d.metadata.generation == 2


# -- patches --------------------------------------------------------------------------------

def test_strategic_merge_patch_merges_containers_and_env_by_name(kube: client.ApiClient,
                                                                ns: str) -> None:
    apps = client.AppsV1Api(kube)
    body = deployment("api", "127.0.0.1:1/x/api:v1", replicas=0)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar",
                                                           "image": "127.0.0.1:1/x/side:v1"})
    apps.create_namespaced_deployment(ns, body)
    patched = apps.patch_namespaced_deployment("api", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "127.0.0.1:1/x/api:v2",
                        "env": [{"name": "B", "value": "3"}, {"name": "A", "$patch": "delete"},
                                {"name": "C", "value": "4"}]}]}}}})
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"app", "sidecar"}
    assert containers["app"].image == "127.0.0.1:1/x/api:v2"
    assert [(e.name, e.value) for e in containers["app"].env] == [("B", "3"), ("C", "4")]
    assert containers["app"].ports[0].container_port == 8080


def test_merge_patch_replaces_lists_and_json_patch(kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("m", "127.0.0.1:1/x/m:v1", replicas=0))
    # A JSON merge patch replaces the containers list wholesale.
    url = f"{kube.configuration.host}/apis/apps/v1/namespaces/{ns}/deployments/m"
    r = httpx.patch(url, json={"spec": {"template": {"spec": {"containers": [
        {"name": "other", "image": "127.0.0.1:1/x/o:v1"}]}}}},
        headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["other"]
    # JSON patch through the client (a list body selects json-patch+json).
    d = apps.patch_namespaced_deployment("m", ns, [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image",
         "value": "127.0.0.1:1/x/o:v2"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}},
        {"op": "test", "path": "/spec/replicas", "value": 0}])
    assert d.spec.template.spec.containers[0].image == "127.0.0.1:1/x/o:v2"
    assert d.metadata.annotations == {"a": "b"}
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment("m", ns, [{"op": "test", "path": "/spec/replicas",
                                                    "value": 5}])
    assert e.value.status == 422


def test_scale_subresource(kube: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("s", "127.0.0.1:1/x/s:v1", replicas=0))
    scale = apps.read_namespaced_deployment_scale("s", ns)
    assert scale.spec.replicas == 0 and scale.status.selector == "app=s,version=stable"
    apps.patch_namespaced_deployment_scale("s", ns, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("s", ns).spec.replicas == 3


# -- selectors, cascades, watch ---------------------------------------------------------------

def test_label_and_field_selectors(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}),
                         ("c", {"tier": "web", "env": "dev"})):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kw: Any) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier==web,env!=prod") == ["c"]
    assert names(label_selector="tier in (db, cache)") == ["b"]
    assert names(label_selector="tier notin (db),env") == ["a", "c"]
    assert names(label_selector="!env") == ["b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]


def test_cascading_delete_of_deployment_and_namespace(kube: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("cas", "127.0.0.1:1/x/c:v1", replicas=2))
    wait_until(lambda: len(core.list_namespaced_pod(ns).items) == 2, what="pods created")
    rs = apps.list_namespaced_replica_set(ns).items
    assert len(rs) == 1 and rs[0].metadata.owner_references[0].kind == "Deployment"
    apps.delete_namespaced_deployment("cas", ns)
    assert apps.list_namespaced_replica_set(ns).items == []
    assert core.list_namespaced_pod(ns).items == []
    core.create_namespaced_config_map(ns, {"metadata": {"name": "left"}})
    core.delete_namespace(ns)
    with pytest.raises(ApiException):
        core.read_namespace(ns)
    assert core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items == []


def test_watch_streams_changes(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "before"}})
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def run() -> None:
        for event in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: ("ADDED", "before") in seen, what="initial ADDED")
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w"}})
    core.patch_namespaced_config_map("w", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("w", ns)
    t.join(timeout=10)
    assert seen == [("ADDED", "before"), ("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_resumes_from_resource_version(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    listed = core.list_namespaced_config_map(ns)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "late"}})
    url = (f"{kube.configuration.host}/api/v1/namespaces/{ns}/configmaps?watch=true"
           f"&resourceVersion={listed.metadata.resource_version}&timeoutSeconds=1")
    lines = httpx.get(url, timeout=10).text.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


# -- Istio -------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_istio_objects_crud(kube: client.ApiClient, ns: str, version: str) -> None:
    custom = client.CustomObjectsApi(kube)
    group = "networking.istio.io"
    vs = {"apiVersion": f"{group}/{version}", "kind": "VirtualService",
          "metadata": {"name": "web"},
          "spec": {"hosts": ["web"], "http": [{"route": [
              {"destination": {"host": "web", "subset": "stable"}, "weight": 100}]}]}}
    created = custom.create_namespaced_custom_object(group, version, ns, "virtualservices", vs)
    assert created["apiVersion"] == f"{group}/{version}" and created["metadata"]["generation"] == 1
    dr = {"apiVersion": f"{group}/{version}", "kind": "DestinationRule", "metadata": {"name": "web"},
          "spec": {"host": "web", "subsets": [{"name": "stable", "labels": {"version": "stable"}}]}}
    custom.create_namespaced_custom_object(group, version, ns, "destinationrules", dr)
    gw = {"apiVersion": f"{group}/{version}", "kind": "Gateway", "metadata": {"name": "gw"},
          "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
              {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
    custom.create_namespaced_custom_object(group, version, ns, "gateways", gw)
    patched = custom.patch_namespaced_custom_object(group, version, ns, "virtualservices", "web", {
        "spec": {"http": [{"route": [
            {"destination": {"host": "web", "subset": "stable"}, "weight": 90},
            {"destination": {"host": "web", "subset": "canary"}, "weight": 10}]}]}})
    assert patched["metadata"]["generation"] == 2
    other = "v1beta1" if version == "v1" else "v1"
    read = custom.get_namespaced_custom_object(group, other, ns, "virtualservices", "web")
    assert read["apiVersion"] == f"{group}/{other}"
    assert [r["weight"] for r in read["spec"]["http"][0]["route"]] == [90, 10]
    listed = custom.list_namespaced_custom_object(group, version, ns, "gateways")
    assert [g["metadata"]["name"] for g in listed["items"]] == ["gw"]
    custom.delete_namespaced_custom_object(group, version, ns, "virtualservices", "web")
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object(group, version, ns, "virtualservices", "web")
    assert e.value.status == 404


# -- faults, audit, restart ---------------------------------------------------------------------

def test_fault_injection_on_the_api(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    url = box.urls["kubernetes"]
    httpx.post(f"{url}/_sandbox/faults", json={"method": "GET", "path": "/deployments",
                                               "status": 503, "count": 2}).raise_for_status()
    apps = client.AppsV1Api(kube)
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            apps.list_namespaced_deployment(ns)
        assert e.value.status == 503
    assert apps.list_namespaced_deployment(ns).items == []


def test_audit_records_images_once_per_change(box: Sandbox, kube: client.ApiClient,
                                              ns: str) -> None:
    apps = client.AppsV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("aud", "127.0.0.1:1/x/a:v1", replicas=0))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app",
                                                            "image": "127.0.0.1:1/x/a:v2"}]}}}}
    apps.patch_namespaced_deployment("aud", ns, patch)
    apps.patch_namespaced_deployment("aud", ns, patch)  # no-op: already applied
    entries = [e for e in box.world.audits["kubernetes"].entries
               if e.get("namespace") == ns and e.get("kind") == "Deployment" and e["by"] == "api"]
    assert [(e["action"], e["images"]) for e in entries] == [
        ("create", ["127.0.0.1:1/x/a:v1"]), ("patch", ["127.0.0.1:1/x/a:v2"])]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    first = start_box(tmp_path)
    try:
        kube = api_client(first)
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": "keep"}})
        client.CoreV1Api(kube).create_namespaced_config_map("keep", {"metadata": {"name": "c"},
                                                                     "data": {"a": "1"}})
        rv = client.CoreV1Api(kube).read_namespaced_config_map("c", "keep").metadata.resource_version
    finally:
        first.stop()
    second = start_box(tmp_path)
    try:
        core = client.CoreV1Api(api_client(second))
        read = core.read_namespaced_config_map("c", "keep")
        assert read.data == {"a": "1"} and read.metadata.resource_version == rv
        created = core.create_namespaced_config_map("keep", {"metadata": {"name": "d"}})
        assert int(created.metadata.resource_version) > int(rv)
    finally:
        second.stop()
