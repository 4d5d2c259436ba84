"""What a bad release looks like, on both backends: a crashing image (CrashLoopBackOff), one
the registry does not have (ErrImagePull / ImagePullBackOff), one that never passes
readiness (the Deployment's own ProgressDeadlineExceeded) — each fails Kepler's rollout
wait, non-retryable, naming what a user would see in `kubectl describe`; and the pods' logs
read the way `kepler logs` reads them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities.kubernetes.client import Clusters
from activities.kubernetes.workloads import DeploymentActivities
from kepler.clients import pod_logs
from kepler.payloads import WaitRollout
from tests.helpers import eventually
from tests.realk8s.conftest import Backend, run
from tests.realk8s.test_workloads import created, pushed, release

CRASH = {"io.kepler.sandbox.crash": "true"}
UNREADY = {"io.kepler.sandbox.unready": "true"}


def failed_rollout(backend: Backend, service: str, image: str, deadline: int = 600) -> str:
    target = created(backend, service)
    cluster = Clusters(backend.platform)("staging")
    cluster.patch("Deployment", target.namespace, service,
                  {"spec": {"progressDeadlineSeconds": deadline}})
    k8s_acts = DeploymentActivities(backend.platform)
    result = run(k8s_acts.apply_release, release(target, image, {"a": "bad"}))
    with pytest.raises(ApplicationError) as e:
        run(k8s_acts.wait_rollout, WaitRollout(target=target, generation=result.generation,
                                               timeout=timedelta(seconds=90)))
    assert e.value.type == "RolloutFailed" and e.value.non_retryable, e.value
    return str(e.value)


def test_a_crashing_image_fails_the_rollout_with_crash_loop_back_off(backend: Backend) -> None:
    service = backend.service("crash")
    message = failed_rollout(backend, service, pushed(backend, service, "v1", CRASH))
    assert "CrashLoopBackOff" in message, message


def test_an_image_the_registry_lacks_fails_with_image_pull_back_off(backend: Backend) -> None:
    service = backend.service("ghost")
    missing = f"{backend.platform.registry.host}/demo/{service}@sha256:" + "f" * 64
    message = failed_rollout(backend, service, missing)
    assert "ImagePullBackOff" in message or "ErrImagePull" in message, message


def test_a_never_ready_image_ends_in_progress_deadline_exceeded(backend: Backend) -> None:
    service = backend.service("slow")
    message = failed_rollout(backend, service, pushed(backend, service, "v1", UNREADY), deadline=5)
    assert "ProgressDeadlineExceeded" in message, message


def test_pod_logs_are_read_like_kepler_logs(backend: Backend) -> None:
    service = backend.service("logs")
    target = created(backend, service)
    k8s_acts = DeploymentActivities(backend.platform)
    result = run(k8s_acts.apply_release, release(target, pushed(backend, service, "v1"), {"a": "1"}))
    run(k8s_acts.wait_rollout, WaitRollout(target=target, generation=result.generation,
                                           timeout=timedelta(seconds=60)))
    core = k8s.CoreV1Api(Clusters(backend.platform)("staging").api)
    pods = pod_logs.service_pods(core, target.namespace, service, "stable")
    assert pods, "no pods of the stable version"

    def logged() -> list[pod_logs.LogLine]:
        try:
            return pod_logs.read(core, target.namespace, pods[0].metadata.name, None, None, 20)
        except ApiException as e:  # a real kubelet: 400 "no logs found" until the first line
            assert e.status == 400 and "no logs found" in str(e.body), e
            return []

    lines = eventually(logged, "logged a line")
    assert all(line.pod == pods[0].metadata.name for line in lines)
