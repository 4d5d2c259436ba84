"""Istio routes, CronJobs and their run-once Jobs, and a decommission's phase 1, restore and
teardown, on both backends: the VirtualService weights and the tester header match as
Istio's CRD stores them, a CronJob's release and restore, a Job run to completion, and a
teardown that leaves a namespace Kepler did not make where it was."""

from __future__ import annotations

from datetime import timedelta

from activities.kubernetes.client import Clusters
from activities.kubernetes.cronjob import CronJobActivities
from activities.kubernetes.istio import IstioActivities, current_mirror, current_weights
from activities.kubernetes.teardown import TeardownActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests
from kepler.decommission import EnvTarget, TeardownRequest
from kepler.jobs import StartJob, WaitJob
from kepler.spec import Resources, ServiceSpec
from kepler.payloads import ApplyObjects, ApplyRelease, Authorization, ReleaseTarget, RouteWeights
from kepler.workloads import Schedule
from tests.helpers import eventually
from tests.realk8s.conftest import Backend, run
from tests.realk8s.test_workloads import created, pushed


def test_route_weights_and_the_tester_header(backend: Backend) -> None:
    service = backend.service("rt")
    target = created(backend, service)
    istio = IstioActivities(backend.platform)
    previous = run(istio.set_routes, RouteWeights(env="staging", namespace=target.namespace,
                                                  service=service, stable=80, canary=20,
                                                  canary_header=True, authorization=Authorization()))
    assert (previous.stable, previous.canary, previous.canary_header) == (100, 0, False)
    vs = Clusters(backend.platform)("staging").get("VirtualService", target.namespace, service)
    assert current_weights(vs) == (80, 20, True)
    header = next(r for r in vs["spec"]["http"] if r.get("match"))
    assert header["match"] == [{"headers": {"x-canary": {"exact": "always"}}}]
    assert header["route"][0]["destination"]["subset"] == "canary"
    run(istio.set_routes, RouteWeights(env="staging", namespace=target.namespace, service=service))
    vs = Clusters(backend.platform)("staging").get("VirtualService", target.namespace, service)
    assert current_weights(vs) == (100, 0, False)


def test_a_mirror_route_is_accepted_and_taken_away(backend: Backend) -> None:
    """A canary's mirror stage: live traffic all on stable, a copy of half of it to the
    canary subset (Istio's mirror and mirrorPercentage, validated by the real CRD schema)."""
    service = backend.service("mr")
    target = created(backend, service)
    istio = IstioActivities(backend.platform)
    run(istio.set_routes, RouteWeights(env="staging", namespace=target.namespace, service=service,
                                       canary_header=True, mirror=50, authorization=Authorization()))
    vs = Clusters(backend.platform)("staging").get("VirtualService", target.namespace, service)
    assert current_weights(vs) == (100, 0, True) and current_mirror(vs) == 50
    live = next(r for r in vs["spec"]["http"] if not r.get("match"))
    assert live["mirror"] == {"host": service, "subset": "canary"}
    assert live["mirrorPercentage"] == {"value": 50.0}
    previous = run(istio.set_routes, RouteWeights(env="staging", namespace=target.namespace,
                                                  service=service, stable=90, canary=10,
                                                  canary_header=True, authorization=Authorization()))
    assert previous.mirror == 50  # what undo would put back
    vs = Clusters(backend.platform)("staging").get("VirtualService", target.namespace, service)
    assert current_weights(vs) == (90, 10, True) and current_mirror(vs) == 0
    assert not any("mirror" in r for r in vs["spec"]["http"])


def cronjob_service(backend: Backend, service: str) -> ReleaseTarget:
    spec = ServiceSpec(name=service, team="t", type="cronjob", config_files={"a": "1"},
                       schedule=Schedule(cron="*/5 * * * *", active_deadline=60))
    run(DeploymentActivities(backend.platform).apply_objects, ApplyObjects(
        env="staging", run_id="r1", manifests=manifests.for_environment(
            spec, "staging", f"{service}-staging")))
    return ReleaseTarget(env="staging", namespace=f"{service}-staging", service=service)


def test_a_cronjob_release_is_put_back_exactly(backend: Backend) -> None:
    service = backend.service("cron")
    target = cronjob_service(backend, service)
    jobs = CronJobActivities(backend.platform)
    before = run(jobs.snapshot, target)
    image = pushed(backend, service, "v1")
    change = ApplyRelease(target=target, image=image, replicas=0, config={"a": "2"},
                          resources=Resources(), annotations={"kepler.dev/commit": "c" * 40},
                          authorization=Authorization())
    assert run(jobs.apply_release, change).changed
    assert not run(jobs.apply_release, change).changed
    now = run(jobs.snapshot, target)
    assert (now.image, now.config) == (image, {"a": "2"})
    run(jobs.restore_release, before)
    restored = run(jobs.snapshot, target)
    assert (restored.image, restored.config) == (before.image, before.config)


def test_a_run_once_job_completes(backend: Backend) -> None:
    service = backend.service("job")
    target = cronjob_service(backend, service)
    jobs = CronJobActivities(backend.platform)
    image = pushed(backend, service, "v1")
    run(jobs.apply_release, ApplyRelease(target=target, image=image, replicas=0, config={},
                                         resources=Resources(), annotations={},
                                         authorization=Authorization()))
    ref = run(jobs.start_job, StartJob(target=target, name=f"{service}-run-1"))
    assert ref.created and ref.image == image
    assert not run(jobs.start_job, StartJob(target=target, name=f"{service}-run-1")).created
    result = run(jobs.wait_job, WaitJob(job=ref, timeout=timedelta(seconds=60)))
    assert result.outcome == "succeeded", result


def test_phase_one_restore_and_teardown_leave_a_namespace_kepler_did_not_make(backend: Backend) -> None:
    service = backend.service("dc")
    ns = f"{service}-staging"
    cluster = Clusters(backend.platform)("staging")
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})  # theirs
    target = created(backend, service)
    cluster.patch("Deployment", ns, service, {"spec": {"replicas": 2}})
    vs_before = cluster.get("VirtualService", ns, service)["spec"]
    acts, routes = TeardownActivities(backend.platform), IstioActivities(backend.platform)
    where = EnvTarget(env="staging", namespace=ns, service=service)
    footprint = run(acts.record_footprint, where)
    assert footprint.replicas == {service: 2}
    assert run(routes.remove_routes, footprint) == [f"VirtualService {ns}/{service}"]
    assert run(acts.scale_down, footprint) == [f"Deployment {ns}/{service} -> 0"]
    eventually(lambda: cluster.get("VirtualService", ns, service) is None, "removed the routes")
    assert run(acts.scale_restore, footprint) == [f"Deployment {ns}/{service} -> 2"]
    assert run(routes.restore_routes, footprint) == [f"VirtualService {ns}/{service}"]
    assert cluster.get("VirtualService", ns, service)["spec"] == vs_before
    assert cluster.get("Deployment", target.namespace, service)["spec"]["replicas"] == 2

    run(acts.teardown, TeardownRequest(target=where, part="istio"))
    result = run(acts.teardown, TeardownRequest(target=where, part="kubernetes",
                                                delete_namespace=True))
    assert f"Deployment {ns}/{service}" in result.deleted
    assert f"Namespace {ns}" not in result.deleted  # Kepler did not make it
    eventually(lambda: run(acts.inventory, where) == [], "emptied the namespace")
    assert cluster.get("Namespace", None, ns) is not None


def test_teardown_deletes_the_namespace_kepler_made_once_it_is_empty(backend: Backend) -> None:
    """A real foreground delete leaves the workloads listed (being deleted) for a while: the
    namespace is still empty of anything that stays, so it goes (opted in)."""
    service = backend.service("ns")
    target = created(backend, service)
    acts = TeardownActivities(backend.platform)
    where = EnvTarget(env="staging", namespace=target.namespace, service=service)
    run(acts.teardown, TeardownRequest(target=where, part="istio"))
    result = run(acts.teardown, TeardownRequest(target=where, part="kubernetes",
                                                delete_namespace=True))
    assert result.kept == [] and f"Namespace {target.namespace}" in result.deleted, result
    assert run(acts.inventory, where) == []
    cluster = Clusters(backend.platform)("staging")
    eventually(lambda: cluster.get("Namespace", None, target.namespace) is None,
               "deleted the namespace", timeout=120)
