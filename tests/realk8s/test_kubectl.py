"""The kubectl commands the README shows, with the kubectl `make cluster` built (1.36, which
sends protobuf bodies for built-in kinds), against both clusters."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from sandbox.cluster import binaries_dir
from tests.conftest import require_cluster_built
from tests.realk8s.conftest import Backend
from tests.realk8s.test_workloads import pushed


def kubectl_for(backend: Backend, tmp_path: Path) -> Any:
    require_cluster_built()
    kubeconfig = backend.kubeconfig
    if kubeconfig is None:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
            "clusters": [{"name": "sandbox", "cluster": {"server": backend.box.urls["kubernetes"]}}],
            "users": [{"name": "dev", "user": {}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "dev"}}]}))

    def kubectl(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run([str(binaries_dir() / "kubectl"), "--kubeconfig", str(kubeconfig),
                                 *args], input=stdin, capture_output=True, text=True, timeout=120,
                                env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout
    return kubectl


def test_the_readme_kubectl_commands(backend: Backend, tmp_path: Path) -> None:
    kubectl = kubectl_for(backend, tmp_path)
    ns = backend.service("kc")
    v1, v2 = pushed(backend, "web", "kc-v1"), pushed(backend, "web", "kc-v2")
    assert kubectl("create", "ns", ns).strip() == f"namespace/{ns} created"
    assert kubectl("create", "deployment", "web", f"--image={v1}", "-n", ns).strip() == \
        "deployment.apps/web created"
    manifest = [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                      {"name": "web", "image": v2, "ports": [{"name": "http", "containerPort": 8080}],
                       "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}]
    out = kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(manifest))
    assert "deployment.apps/web configured" in out and "service/web created" in out
    assert kubectl("get", "deploy", "-n", ns).split()[:6] == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "web"]
    got = yaml.safe_load(kubectl("get", "deploy", "web", "-n", ns, "-o", "yaml"))
    assert got["spec"]["template"]["spec"]["containers"][0]["image"] == v2
    assert 'deployment "web" successfully rolled out' in kubectl(
        "rollout", "status", "deploy/web", "-n", ns, "--timeout=90s")
    described = kubectl("describe", "deploy", "web", "-n", ns)
    assert "1 desired | 1 updated | 1 total | 1 available | 0 unavailable" in described
    assert "http-get http://:http/healthz delay=0s timeout=1s period=10s" in described
    assert kubectl("scale", "deploy", "web", "--replicas=2", "-n", ns).strip() == \
        "deployment.apps/web scaled"
    kubectl("rollout", "status", "deploy/web", "-n", ns, "--timeout=90s")
    assert 'deployment.apps "web" deleted' in kubectl("delete", "deploy", "web", "-n", ns)
