"""The decommission activities against the Kubernetes+Istio stand-in through the official
client: record, remove routes, scale to 0, restore exactly, tear down, and again (idempotent)."""

from __future__ import annotations

import uuid

from temporalio.testing import ActivityEnvironment

from activities.kubernetes.client import Clusters
from activities.kubernetes.istio import IstioActivities
from activities.kubernetes.teardown import TeardownActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests
from kepler.decommission import EnvTarget, TeardownRequest
from kepler.models import ServiceSpec
from kepler.settings import parse_platform
from kepler.steps import ApplyObjects
from sandbox.serve import Sandbox
from tests.conftest import platform_yaml


def run(fn, *args):  # noqa: ANN001, ANN202
    return ActivityEnvironment().run(fn, *args)


def test_phase_one_restore_and_teardown_on_the_stand_in(sandbox: Sandbox) -> None:
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
    kube = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    for what in (f"Deployment {ns}/{service}", f"Service {ns}/{service}",
                 f"ConfigMap {ns}/{service}-config", f"ServiceAccount {ns}/{service}",
                 f"Namespace {ns}"):
        assert what in kube.deleted, (what, kube.deleted)
    assert run(acts.inventory, target) == []
    assert run(acts.teardown, TeardownRequest(target=target, part="kubernetes")).deleted == []
    assert cluster.get("Namespace", None, ns) is None


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
    result = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    assert f"Namespace {ns}" not in result.deleted
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
    kube = run(acts.teardown, TeardownRequest(target=target, part="kubernetes"))
    assert f"Deployment {ns}/{service}" in kube.deleted and f"Namespace {ns}" not in kube.deleted
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
