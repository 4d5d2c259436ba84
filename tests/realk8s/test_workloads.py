"""Deployments, the way Kepler's activities use them, on both backends: objects applied
once (a second apply changes nothing), a release applied and snapshotted, put back exactly,
its rollout waited for, its revisions read, a stale write re-read on 409, scale and
resources overrides, a canary's own ConfigMap, and only what a run created deleted."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from activities.kubernetes.client import Clusters, read_modify_write
from activities.kubernetes.scale import ScaleActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests
from kepler.scale import ApplyOverrides, Overrides
from kepler.spec import Resources, ServiceSpec
from kepler.payloads import ApplyObjects, ApplyRelease, Authorization, ReleaseTarget, UndoCreated, WaitRollout
from sandbox.registry.oci import build_image, push_image
from tests.helpers import eventually
from tests.realk8s.conftest import Backend, run


def pushed(backend: Backend, service: str, tag: str, labels: dict[str, str] | None = None) -> str:
    """An image in the sandbox registry, by digest, as a release names it."""
    digest = asyncio.run(push_image(backend.box.urls["registry"], f"demo/{service}", tag, build_image(
        {"app": tag.encode()}, labels or {}, created="2026-01-01T00:00:00Z")))
    return f"{backend.platform.registry.host}/demo/{service}@{digest}"


def created(backend: Backend, service: str, replicas: int = 1, run_id: str = "r1") -> ReleaseTarget:
    spec = ServiceSpec(name=service, team="t", replicas=replicas, config_files={"a": "1"})
    run(DeploymentActivities(backend.platform).apply_objects, ApplyObjects(
        env="staging", run_id=run_id, manifests=manifests.for_environment(spec, "staging",
                                                                          f"{service}-staging")))
    return ReleaseTarget(env="staging", namespace=f"{service}-staging", service=service)


def release(target: ReleaseTarget, image: str, config: dict[str, str], replicas: int = 1) -> ApplyRelease:
    return ApplyRelease(target=target, image=image, replicas=replicas, config=config,
                        resources=Resources(), annotations={"kepler.dev/commit": "c" * 40},
                        authorization=Authorization())


def test_objects_applied_twice_are_created_once(backend: Backend) -> None:
    service = backend.service("objs")
    spec = ServiceSpec(name=service, team="t", replicas=1)
    objects = manifests.for_environment(spec, "staging", f"{service}-staging")
    k8s = DeploymentActivities(backend.platform)
    first = run(k8s.apply_objects, ApplyObjects(env="staging", manifests=objects, run_id="r1"))
    assert all(a.created for a in first)
    assert {a.kind for a in first} >= {"Namespace", "Deployment", "Service", "ConfigMap",
                                       "VirtualService", "DestinationRule"}
    again = run(k8s.apply_objects, ApplyObjects(env="staging", manifests=objects, run_id="r2"))
    assert not any(a.created for a in again)


def test_a_release_applies_once_and_rolls_out(backend: Backend) -> None:
    service = backend.service("rel")
    target = created(backend, service, replicas=2)
    k8s = DeploymentActivities(backend.platform)
    change = release(target, pushed(backend, service, "v1"), {"a": "2"}, replicas=2)
    result = run(k8s.apply_release, change)
    assert result.changed and result.generation >= 2
    assert not run(k8s.apply_release, change).changed  # the same release again: nothing written
    rollout = run(k8s.wait_rollout, WaitRollout(target=target, generation=result.generation,
                                                timeout=timedelta(seconds=120)))
    assert rollout.ready_replicas == 2
    now = run(k8s.snapshot, target)
    assert (now.image, now.config, now.replicas) == (change.image, {"a": "2"}, 2)
    deploy = Clusters(backend.platform)("staging").get("Deployment", target.namespace, service)
    assert deploy["status"]["availableReplicas"] == 2
    assert any(c["type"] == "Available" and c["status"] == "True" for c in deploy["status"]["conditions"])


def test_restore_puts_image_and_config_back_and_revisions_are_listed(backend: Backend) -> None:
    service = backend.service("rst")
    target = created(backend, service)
    k8s = DeploymentActivities(backend.platform)
    v1, v2 = pushed(backend, service, "v1"), pushed(backend, service, "v2")
    first = run(k8s.apply_release, release(target, v1, {"a": "v1"}))
    run(k8s.wait_rollout, WaitRollout(target=target, generation=first.generation,
                                      timeout=timedelta(seconds=120)))
    before = run(k8s.snapshot, target)
    second = run(k8s.apply_release, release(target, v2, {"a": "v2"}))
    run(k8s.wait_rollout, WaitRollout(target=target, generation=second.generation,
                                      timeout=timedelta(seconds=120)))
    assert [r.image for r in run(k8s.revision_history, target)][:2] == [v2, v1]
    restored = run(k8s.restore_release, before)
    run(k8s.wait_rollout, WaitRollout(target=target, generation=restored.generation,
                                      timeout=timedelta(seconds=120)))
    now = run(k8s.snapshot, target)
    assert (now.image, now.config, now.resources) == (v1, {"a": "v1"}, before.resources)


def test_a_stale_write_gets_409_and_is_reread_not_overwritten(backend: Backend) -> None:
    service = backend.service("cnf")
    target = created(backend, service)
    cluster = Clusters(backend.platform)("staging")
    stale = cluster.get("Deployment", target.namespace, service)
    cluster.patch("Deployment", target.namespace, service,
                  {"metadata": {"labels": {"someone": "else"}}})  # a concurrent change
    seen: list[dict] = []

    def change(obj: dict) -> bool:
        seen.append(obj)
        obj["metadata"].setdefault("annotations", {})["kepler.dev/test"] = "mine"
        return True

    live = read_modify_write(cluster, "Deployment", target.namespace, service, change, live=stale)
    assert len(seen) == 2  # the stale write was refused (409) and the object read again
    assert live["metadata"]["labels"]["someone"] == "else"  # their change kept
    assert live["metadata"]["annotations"]["kepler.dev/test"] == "mine"


def test_scale_and_resources_overrides(backend: Backend) -> None:
    service = backend.service("scl")
    target = created(backend, service)
    scale = ScaleActivities(backend.platform)
    resources = Resources(cpu_request="200m", memory_request="256Mi", cpu_limit="1",
                          memory_limit="512Mi")
    state = run(scale.apply_overrides, ApplyOverrides(
        target=target, replicas=3, resources=resources,
        overrides=Overrides(replicas=3, resources=resources), requested_by="carol"))
    assert state.replicas == 3 and state.resources == resources
    again = run(scale.deployment_state, target)
    assert (again.replicas, again.resources, again.overrides.replicas) == (3, resources, 3)


def test_only_what_the_run_created_is_deleted(backend: Backend) -> None:
    service = backend.service("own")
    target = created(backend, service, run_id="r1")
    k8s = DeploymentActivities(backend.platform)
    assert run(k8s.delete_if_created, UndoCreated(service=service, run_id="r2", env="staging",
                                                  kind="Service", namespace=target.namespace,
                                                  name=service)) is False
    assert run(k8s.delete_if_created, UndoCreated(service=service, run_id="r1", env="staging",
                                                  kind="Service", namespace=target.namespace,
                                                  name=service)) is True
    cluster = Clusters(backend.platform)("staging")
    eventually(lambda: cluster.get("Service", target.namespace, service) is None, "deleted")
