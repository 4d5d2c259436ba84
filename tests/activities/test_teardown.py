"""The decommission activities against the Kubernetes+Istio stand-in through the official
client: record, remove routes, scale to 0, restore exactly, tear down, and again (idempotent).
A namespace Kepler made goes only with `decommission.delete_namespaces` (the request's
`delete_namespace`); every request is checked against the worker's RBAC (deploy/rbac.py):
the base roles without the opt-in, the base and kepler-namespace-cleanup with it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.kubernetes.client import Cluster, Clusters
from activities.kubernetes.istio import IstioActivities
from activities.kubernetes.teardown import TeardownActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests
from kepler.decommission import EnvTarget, TeardownRequest
from kepler.spec import ServiceSpec
from kepler.settings import parse_platform
from kepler.payloads import ApplyObjects
from sandbox.serve import Sandbox
from deploy import rbac
from tests.conftest import platform_yaml

OFF = "decommission.delete_namespaces is off"


def run(fn, *args):  # noqa: ANN001, ANN202
    return ActivityEnvironment().run(fn, *args)


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every Kubernetes request made through Cluster from here on."""
    calls: list[tuple[str, str]] = []
    original = Cluster.call

    def recording(self: Cluster, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, path))
        return original(self, method, path, *args, **kwargs)
    monkeypatch.setattr(Cluster, "call", recording)
    return calls


def denied(calls: list[tuple[str, str]], opted_in: bool = False) -> list[tuple[str, str]]:
    roles = rbac.cluster_roles() + ([rbac.cleanup_role()] if opted_in else [])
    return sorted({(m, p) for m, p in calls if not rbac.allowed(m, p, roles)})


def test_phase_one_restore_and_teardown_on_the_stand_in(
        sandbox: Sandbox, requests: list[tuple[str, str]]) -> None:
    platform = parse_platform(platform_yaml(sandbox.urls, "127.0.0.1:1", "unused"))
    service = f"dc{uuid.uuid4().hex[:8]}"
    ns = f"{service}-staging"
    spec = ServiceSpec(name=service, team="t")
    run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="staging", manifests=manifests.for_environment(spec, "staging", ns), run_id="r1"))
    cluster = Clusters(platform)("staging")
    cluster.patch("Deployment", ns, service, {"spec": {"replicas": 2}})
    vs_before = cluster.get("VirtualService", ns, service)["spec"]

    acts, routes = TeardownActivities(platform), IstioActivities(platform)
    target = EnvTarget(env="staging", namespace=ns, service=service)
    fp = run(acts.record_footprint, target)
    assert fp.replicas == {service: 2}
    assert [v["metadata"]["name"] for v in fp.virtual_services] == [service]

    assert run(routes.remove_routes, fp) == [f"VirtualService {ns}/{service}"]
    assert run(routes.remove_routes, fp) == []  # idempotent
    assert run(acts.scale_down, fp) == [f"Deployment {ns}/{service} -> 0"]
    assert run(acts.scale_down, fp) == []
    assert cluster.get("VirtualService", ns, service) is None
    assert cluster.get("Deployment", ns, service)["spec"]["replicas"] == 0

    assert run(acts.scale_restore, fp) == [f"Deployment {ns}/{service} -> 2"]
    assert run(routes.restore_routes, fp) == [f"VirtualService {ns}/{service}"]
    assert run(routes.restore_routes, fp) == []
    assert cluster.get("VirtualService", ns, service)["spec"] == vs_before
    assert cluster.get("Deployment", ns, service)["spec"]["replicas"] == 2

    istio = run(acts.teardown, TeardownRequest(target=target, part="istio"))
    assert sorted(istio.deleted) == sorted([f"VirtualService {ns}/{service}",
                                            f"DestinationRule {ns}/{service}"])
    # by default the namespace Kepler made stays, empty, and the result says why
    kube = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    for what in (f"Deployment {ns}/{service}", f"Service {ns}/{service}",
                 f"ConfigMap {ns}/{service}-config", f"ServiceAccount {ns}/{service}"):
        assert what in kube.deleted, (what, kube.deleted)
    assert f"Namespace {ns}" not in kube.deleted and kube.kept == [f"Namespace {ns} kept ({OFF})"]
    assert run(acts.inventory, target) == []
    assert cluster.get("Namespace", None, ns) is not None
    assert not [p for _, p in requests if "/secrets" in p]  # no Secret is even listed
    assert denied(requests) == [], "the base roles allow every request without the opt-in"

    # opted in: the namespace goes, which takes the opt-in role (Secrets listed, ns deleted)
    requests.clear()
    opted = TeardownRequest(target=target, part="kubernetes", delete_namespace=True)
    assert run(acts.teardown, opted).model_dump() == {"deleted": [f"Namespace {ns}"], "kept": []}
    assert cluster.get("Namespace", None, ns) is None
    assert denied(requests, opted_in=True) == []
    assert ("GET", f"/api/v1/namespaces/{ns}/secrets") in denied(requests)
    assert run(acts.teardown, opted).model_dump() == {"deleted": [], "kept": []}  # idempotent


def test_a_shared_namespace_is_not_deleted(sandbox: Sandbox) -> None:
    platform = parse_platform(platform_yaml(sandbox.urls, "127.0.0.1:1", "unused"))
    ns = f"shared{uuid.uuid4().hex[:6]}"
    kube = DeploymentActivities(platform)
    names = [f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"]
    for name in names:
        run(kube.apply_objects, ApplyObjects(env="staging", run_id="r", manifests=manifests.for_environment(
            ServiceSpec(name=name, team="t"), "staging", ns)))
    acts = TeardownActivities(platform)
    target = EnvTarget(env="staging", namespace=ns, service=names[0])
    run(acts.teardown, TeardownRequest(target=target, part="istio"))
    result = run(acts.teardown, TeardownRequest(target=target, part="kubernetes",
                                                delete_namespace=True))
    assert f"Namespace {ns}" not in result.deleted
    assert result.kept == [f"Namespace {ns} kept (not empty: VirtualService {names[1]})"]
    cluster = Clusters(platform)("staging")
    assert cluster.get("Deployment", ns, names[1]) is not None  # the neighbour is untouched
    assert cluster.get("Namespace", None, ns) is not None


def test_teardown_deletes_only_what_kepler_created(sandbox: Sandbox) -> None:
    """The namespace existed before `service create`, holding a PVC, a Secret and a
    ConfigMap of the team's: create adopts it without labelling it Kepler's, and the
    teardown deletes Kepler's objects only; the namespace and everything else stay."""
    platform = parse_platform(platform_yaml(sandbox.urls, "127.0.0.1:1", "unused"))
    service = f"dc{uuid.uuid4().hex[:8]}"
    ns = f"{service}-staging"
    cluster = Clusters(platform)("staging")
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    theirs = [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
         "stringData": {"password": "x"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "extra", "namespace": ns, "labels": {"app": service}}, "data": {"a": "1"}},
    ]
    for obj in theirs:
        cluster.create(obj)
    spec = ServiceSpec(name=service, team="t")
    run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="staging", manifests=manifests.for_environment(spec, "staging", ns), run_id="r1"))
    labels = cluster.get("Namespace", None, ns)["metadata"].get("labels") or {}
    assert "app.kubernetes.io/managed-by" not in labels  # adopted, never labelled as Kepler's

    acts, target = TeardownActivities(platform), EnvTarget(env="staging", namespace=ns, service=service)
    run(acts.teardown, TeardownRequest(target=target, part="istio"))
    kube = run(acts.teardown, TeardownRequest(target=target, part="kubernetes",
                                              delete_namespace=True))  # even opted in
    assert f"Deployment {ns}/{service}" in kube.deleted and f"Namespace {ns}" not in kube.deleted
    assert kube.kept == [f"Namespace {ns} kept (not created by Kepler)"]
    assert cluster.get("Namespace", None, ns) is not None
    for obj in theirs:
        assert cluster.get(obj["kind"], ns, obj["metadata"]["name"]) is not None, obj["kind"]
    assert cluster.get("Deployment", ns, service) is None


def test_a_cronjob_service_is_suspended_in_phase_one_restored_and_deleted_in_phase_two(
        sandbox: Sandbox) -> None:
    """CronJobs kept firing through the soak and survived phase 2: now phase 1 suspends
    them, a restore puts each back as it was, and phase 2 deletes them."""
    platform = parse_platform(platform_yaml(sandbox.urls, "127.0.0.1:1", "unused"))
    service = f"cj{uuid.uuid4().hex[:8]}"
    ns = f"{service}-staging"
    spec = ServiceSpec(name=service, team="t", type="cronjob", schedule={"cron": "0 3 * * *"})
    run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="staging", manifests=manifests.for_environment(spec, "staging", ns), run_id="r1"))
    cluster = Clusters(platform)("staging")
    cluster.patch("CronJob", ns, service, {"spec": {"suspend": False}})  # released: it runs

    acts, target = TeardownActivities(platform), EnvTarget(env="staging", namespace=ns, service=service)
    fp = run(acts.record_footprint, target)
    assert fp.suspended == {service: False}
    assert run(acts.scale_down, fp) == [f"CronJob {ns}/{service} -> suspended"]
    assert cluster.get("CronJob", ns, service)["spec"]["suspend"] is True
    assert run(acts.scale_down, fp) == []  # idempotent
    assert run(acts.scale_restore, fp) == [f"CronJob {ns}/{service} -> running"]
    assert cluster.get("CronJob", ns, service)["spec"]["suspend"] is False
    kube = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    assert f"CronJob {ns}/{service}" in kube.deleted and cluster.get("CronJob", ns, service) is None


def test_a_secret_keeps_a_namespace_kepler_made_only_when_opted_in(
        sandbox: Sandbox, requests: list[tuple[str, str]]) -> None:
    """Someone else's Secret in a namespace Kepler made: without the opt-in the namespace is
    kept whatever lives in it, and no Secret is read; with it, the Secret is seen and keeps
    the namespace (a service-account token does not)."""
    platform = parse_platform(platform_yaml(sandbox.urls, "127.0.0.1:1", "unused"))
    service = f"dc{uuid.uuid4().hex[:8]}"
    ns = f"{service}-staging"
    run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="staging", manifests=manifests.for_environment(ServiceSpec(name=service, team="t"),
                                                           "staging", ns), run_id="r1"))
    cluster = Clusters(platform)("staging")
    cluster.create({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                    "metadata": {"name": "token", "namespace": ns}})
    cluster.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
                    "stringData": {"password": "x"}})
    acts, target = TeardownActivities(platform), EnvTarget(env="staging", namespace=ns, service=service)
    run(acts.teardown, TeardownRequest(target=target, part="istio"))
    requests.clear()
    off = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    assert off.kept == [f"Namespace {ns} kept ({OFF})"]
    assert not [p for _, p in requests if "/secrets" in p] and denied(requests) == []

    on = run(acts.teardown, TeardownRequest(target=target, part="kubernetes", delete_namespace=True))
    assert on.model_dump() == {"deleted": [], "kept": [f"Namespace {ns} kept (not empty: Secret db)"]}
    assert cluster.get("Namespace", None, ns) is not None
    assert cluster.get("Secret", ns, "db") is not None
    cluster.delete("Secret", ns, "db")
    requests.clear()
    on = run(acts.teardown, TeardownRequest(target=target, part="kubernetes", delete_namespace=True))
    assert on.deleted == [f"Namespace {ns}"] and denied(requests, opted_in=True) == []
