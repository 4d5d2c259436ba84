"""Kubernetes stand-in: CronJobs, Jobs, PersistentVolumeClaims and pod logs, as a user of
the official client sees them."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kepler import cron
from sandbox.kubernetes import cron as sandbox_cron
from sandbox.kubernetes.batch import BatchController
from sandbox.kubernetes.images import ImageResolver
from sandbox.kubernetes.store import Store
from sandbox.serve import Sandbox
from tests.helpers import wait_until
from tests.sandbox.test_kubernetes import (api_client, box, deployment, kube, ns,  # noqa: F401
                                           push, start_box)


def job(name: str, image: str, backoff: int = 0, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"backoffLimit": backoff, **spec, "template": {
        "metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image}]}}}}


def finished(batch: client.BatchV1Api, ns: str, name: str) -> Any:
    j = batch.read_namespaced_job(name, ns)
    done = [c for c in j.status.conditions or [] if c.type in ("Complete", "Failed")]
    return (j, done[0]) if done else None


def test_job_succeeds_or_fails_by_image_label(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    good = push(box, "team/batch", "v1")
    bad = push(box, "team/batch", "v2", {"io.kepler.sandbox.crash": "true"})
    batch.create_namespaced_job(ns, job("good", good))
    batch.create_namespaced_job(ns, job("bad", bad, backoff=1))
    j, cond = wait_until(lambda: finished(batch, ns, "good"), what="good job ends")
    assert cond.type == "Complete" and j.status.succeeded == 1 and j.status.completion_time
    j, cond = wait_until(lambda: finished(batch, ns, "bad"), what="bad job ends")
    assert cond.type == "Failed" and cond.reason == "BackoffLimitExceeded"
    assert j.status.failed == 2  # backoffLimit 1: one retry
    pods = core.list_namespaced_pod(ns, label_selector="job-name=bad").items
    assert {p.status.phase for p in pods} == {"Failed"}
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 1
    log = core.read_namespaced_pod_log(pods[0].metadata.name, ns)
    assert "exit status 1" in log and "io.kepler.sandbox.crash=true" in log


def test_job_with_a_missing_image_backs_off_and_hits_its_deadline(kube: client.ApiClient,
                                                                  ns: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    batch.create_namespaced_job(ns, job("far", "127.0.0.1:9/x/far:v1", activeDeadlineSeconds=1))
    _, cond = wait_until(lambda: finished(batch, ns, "far"), what="deadline")
    assert cond.reason == "DeadlineExceeded"
    assert core.list_namespaced_pod(ns, label_selector="job-name=far").items == []


def test_bad_batch_objects_are_refused(kube: client.ApiClient, ns: str) -> None:
    batch = client.BatchV1Api(kube)
    bad_job = job("always", "x/y:1")
    bad_job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_job(ns, bad_job)
    assert e.value.status == 422 and "restartPolicy" in e.value.body
    with pytest.raises(ApiException) as e:
        batch.create_namespaced_cron_job(ns, {"metadata": {"name": "c"}, "spec": {
            "schedule": "61 * * * *", "jobTemplate": {"spec": job("c", "x/y:1")["spec"]}}})
    assert e.value.status == 422 and "spec.schedule" in e.value.body
    assert batch.list_namespaced_cron_job(ns).items == [] and batch.list_namespaced_job(ns).items == []


def test_cronjob_crud_and_manual_job_from_its_template(box: Sandbox, kube: client.ApiClient,
                                                       ns: str) -> None:
    batch = client.BatchV1Api(kube)
    image = push(box, "team/batch", "v1")
    batch.create_namespaced_cron_job(ns, {"metadata": {"name": "nightly"}, "spec": {
        "schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "suspend": True,
        "jobTemplate": {"spec": job("nightly", image)["spec"]}}})
    cj = batch.read_namespaced_cron_job("nightly", ns)
    assert cj.spec.schedule == "0 3 * * *" and cj.spec.suspend
    batch.patch_namespaced_cron_job("nightly", ns, {"spec": {"suspend": False}})
    assert batch.read_namespaced_cron_job("nightly", ns).metadata.generation == 2
    manual = {"metadata": {"name": "nightly-manual", "ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": cj.metadata.uid,
        "controller": True}]}, "spec": cj.spec.job_template.spec.to_dict()}
    batch.create_namespaced_job(ns, client.ApiClient().sanitize_for_serialization(manual))
    _, cond = wait_until(lambda: finished(batch, ns, "nightly-manual"), what="manual run")
    assert cond.type == "Complete"
    batch.delete_namespaced_cron_job("nightly", ns)
    wait_until(lambda: not batch.list_namespaced_job(ns).items, what="owned jobs deleted")


def test_schedule_concurrency_policy_and_history() -> None:
    store = Store(None, __import__("sandbox.common", fromlist=["Audit"]).Audit(None))
    from sandbox.kubernetes.batch import CRONJOBS, JOBS, job_condition
    from sandbox.kubernetes.resources import resource_for_kind

    store.create(resource_for_kind("Namespace"), {"metadata": {"name": "n"}})
    batch = BatchController(store, ImageResolver(), 0.05)
    store.create(CRONJOBS, {"metadata": {"name": "c", "namespace": "n"}, "spec": {
        "schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
        "jobTemplate": {"spec": job("c", "x/y:1")["spec"]}}})
    t0 = datetime(2026, 1, 1, 12, 1, tzinfo=timezone.utc).timestamp()
    batch.sync_cronjob(store.find(CRONJOBS, "n", "c"), t0)  # first look: nothing due yet
    assert store.iter(JOBS, "n") == []
    batch.sync_cronjob(store.find(CRONJOBS, "n", "c"), t0 + 4 * 60)  # 12:05
    (first,) = store.iter(JOBS, "n")
    assert first["metadata"]["name"] == f"c-{int((t0 + 240) // 60)}"
    batch.sync_cronjob(store.find(CRONJOBS, "n", "c"), t0 + 9 * 60)  # 12:10, still running
    assert len(store.iter(JOBS, "n")) == 1 and job_condition(first) is None  # Forbid
    cj = store.find(CRONJOBS, "n", "c")
    assert cj["status"]["active"][0]["name"] == first["metadata"]["name"]
    assert cj["status"]["lastScheduleTime"].startswith("2026-01-01T12:05")
    assert sandbox_cron.matches("0 3 * * 1-5", datetime(2026, 1, 2, 3, 0))  # a Friday
    assert not sandbox_cron.matches("0 3 * * 1-5", datetime(2026, 1, 3, 3, 0))  # a Saturday


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 9-17 * * mon-fri", "@daily", "0 0 1 jan *",
                                      "5,35 */2 1-15 * 0", "every day", "61 * * * *", "* * * *",
                                      "0 0 * * 8", "0 0 0 * *", "*/0 * * * *", "1-2-3 * * * *"])
def test_kepler_and_the_stand_in_agree_on_valid_schedules(schedule: str) -> None:
    """Kepler validates a spec's schedule before any change; the stand-in's apiserver
    has its own reading (as a cluster does): the two must accept the same schedules."""
    def accepted(parse: Any) -> bool:
        try:
            parse(schedule)
        except ValueError:
            return False
        return True
    assert accepted(cron.validate) == accepted(sandbox_cron.parse)


def test_pvc_crud_binds(kube: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}})
    pvc = wait_until(lambda: (lambda p: p if p.status.phase == "Bound" else None)(
        core.read_namespaced_persistent_volume_claim("data", ns)), what="bound")
    assert pvc.status.capacity == {"storage": "2Gi"}
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(ns).items] == ["data"]
    core.delete_namespaced_persistent_volume_claim("data", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_persistent_volume_claim("data", ns)
    assert e.value.status == 404


def test_pod_logs_follow_the_image_labels(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    flaky = push(box, "team/logs", "v1", {"io.kepler.sandbox.error-rate": "1.0"})
    apps.create_namespaced_deployment(ns, deployment("web", flaky, replicas=1))

    def running_pod() -> Any:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        return pods[0] if pods and pods[0].status.phase == "Running" and \
            pods[0].status.container_statuses[0].ready else None

    pod = wait_until(running_pod, what="a running pod").metadata.name
    log = wait_until(lambda: (lambda t: t if '" 500 ' in t else None)(
        core.read_namespaced_pod_log(pod, ns)), what="request lines")
    assert "starting (image sha256:" in log and '" 200 ' not in log  # error rate 1.0
    tail = core.read_namespaced_pod_log(pod, ns, tail_lines=1, timestamps=True)
    assert len(tail.splitlines()) == 1 and tail[:4].isdigit() and "Z " in tail
    assert core.read_namespaced_pod_log(pod, ns, since_seconds=1).count("\n") <= 3
    for bad, message in (({"container": "nope"}, "container nope is not valid"),
                         ({"tail_lines": -1}, "tailLines")):
        with pytest.raises(ApiException) as e:
            core.read_namespaced_pod_log(pod, ns, **bad)
        assert e.value.status == 400 and message in e.value.body
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("ghost", ns)
    assert e.value.status == 404

    # follow: a stream that grows while the pod serves
    resp = core.read_namespaced_pod_log(pod, ns, follow=True, since_seconds=1,
                                        _preload_content=False)
    got: list[str] = []

    def read() -> None:
        for chunk in resp.stream(64):
            got.append(chunk.decode())
            if "".join(got).count('"GET ') >= 4:
                break

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=15)
    resp.release_conn()
    # the last second holds at most two request lines: the others came while following
    assert "".join(got).count('"GET ') >= 4
