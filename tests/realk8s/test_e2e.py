"""End to end on the real control plane: the `kepler` CLI, the dev server, a real worker and
the sandbox world played on the real cluster (RealWorld). A crashing release is rolled back,
image and config; rollback to the previous version; scale; a canary whose weights the
sandbox's Prometheus follows, promoted; a decommission that leaves a namespace Kepler did
not make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import yaml

from activities.kubernetes.client import Clusters
from activities.kubernetes.istio import current_weights
from kepler.settings import load_platform
from tests.e2e.test_release import _poll, gitlab_client, kepler
from tests.helpers import eventually
from tests.workers import wait_for, worker_with

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cfg(real_world: Any, dev_env: Any, tmp_path: Path) -> AsyncIterator[Path]:
    """A platform file with every environment on the real cluster, and the real worker on it."""
    def on_the_real_cluster(config: dict[str, Any]) -> None:
        for env in config["environments"].values():
            env["cluster"] = {"kubeconfig": str(real_world.kubeconfig), "context": "kepler-real"}
            # kwok marks pods available on its own clock, which lags under the full suite's load
            # (a crash is still seen at once, by CrashLoopBackOff)
            env["rollout_timeout"] = "5m"
        config["decommission"] = {"min_soak": "1s"}

    async with worker_with(real_world.sandbox, dev_env, tmp_path, f"realk8s-{tmp_path.name}",
                           on_the_real_cluster) as path:
        yield path


def deployment(cfg: Path, name: str, namespace: str) -> dict[str, Any] | None:
    return Clusters(load_platform(cfg))("staging").get("Deployment", namespace, name)


def running(cfg: Path, name: str, namespace: str) -> tuple[str, dict[str, str], int]:
    d = deployment(cfg, name, namespace)
    assert d is not None
    config = Clusters(load_platform(cfg))("staging").get("ConfigMap", namespace, f"{name}-config")
    return (d["spec"]["template"]["spec"]["containers"][0]["image"], config.get("data") or {},
            d["spec"]["replicas"])


async def create(cfg: Path, tmp_path: Path, spec: dict[str, Any]) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch")
    assert code == 0, out + err


async def release(cfg: Path, service: str, ref: str = "main") -> dict[str, Any]:
    code, out, err = await kepler(cfg, "release", service, "--env", "staging", "--ref", ref,
                                  "--watch", "-o", "json")
    assert code == 0, out + err
    return json.loads(out)["report"]


async def test_crashing_release_rolled_back_then_rollback_and_scale(
        real_world: Any, cfg: Path, tmp_path: Path) -> None:
    ns = "vega-staging"
    await create(cfg, tmp_path, {"name": "vega", "team": "t", "replicas": 2,
                                 "config_files": {"app.conf": "v=1\n"}})
    first = await release(cfg, "vega")
    project = gitlab_client(real_world.sandbox).projects.get("demo/vega")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "b.txt", "content": "b\n"}]})
    second = await release(cfg, "vega")
    live = running(cfg, "vega", ns)
    assert live[0] == second["image"] != first["image"]

    project.commits.create({"branch": "main", "commit_message": "v3: crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
        {"action": "update", "file_path": ".kepler/service.yaml", "content": yaml.safe_dump(
            {"name": "vega", "team": "t", "replicas": 2, "config_files": {"app.conf": "v=3\n"}})}]})
    code, out, err = await kepler(cfg, "release", "vega", "--env", "staging", "--ref", "main",
                                  "--watch")
    assert code == 1 and "CrashLoopBackOff" in err, out + err
    assert running(cfg, "vega", ns) == live  # image and config put back on the real cluster

    code, out, err = await kepler(cfg, "rollback", "vega", "--env", "staging", "--to", "previous",
                                  "--watch", "-o", "json")
    assert code == 0, out + err
    assert json.loads(out)["report"]["image"] == first["image"]
    assert running(cfg, "vega", ns)[0] == first["image"]

    code, out, err = await kepler(cfg, "scale", "vega", "--env", "staging", "--replicas", "3",
                                  "--watch")
    assert code == 0, out + err
    assert deployment(cfg, "vega", ns)["spec"]["replicas"] == 3
    eventually(lambda: deployment(cfg, "vega", ns)["status"].get("readyReplicas") == 3,
               "3 ready replicas")


async def test_a_canary_shifts_real_virtual_service_weights_and_is_promoted(
        real_world: Any, cfg: Path, tmp_path: Path) -> None:
    ns = "lyra-staging"
    await create(cfg, tmp_path, {"name": "lyra", "team": "t", "replicas": 2})
    v1 = (await release(cfg, "lyra"))["image"]
    project = gitlab_client(real_world.sandbox).projects.get("demo/lyra")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml",
         "content": "error_rate: 0\nlatency_ms: 50\n"}]})
    code, out, err = await kepler(cfg, "canary", "lyra", "--env", "staging", "--ref", "main",
                                  "--steps", "30", "--interval", "20s", "--failure-limit", "3")
    assert code == 0, out + err
    cluster = Clusters(load_platform(cfg))("staging")
    # the real VirtualService itself, polled: its analysis window is one interval long
    await wait_for(lambda: current_weights(cluster.get("VirtualService", ns, "lyra")) == (70, 30, True),
                   60, "30% routed to the canary", interval=0.1)
    status = await _poll(cfg, "lyra", "staging", lambda s: s.get("outcome") not in (None, "running"),
                         "an outcome", timeout=180)
    assert status["outcome"] == "succeeded", (status.get("error"), status.get("notes"),
                                              status.get("canary"))
    assert current_weights(cluster.get("VirtualService", ns, "lyra")) == (100, 0, False)
    image = running(cfg, "lyra", ns)[0]
    assert image != v1 and deployment(cfg, "lyra-canary", ns)["spec"]["replicas"] == 0


async def test_decommission_leaves_a_namespace_kepler_did_not_make(
        real_world: Any, cfg: Path, tmp_path: Path) -> None:
    ns = "pyxis-staging"
    cluster = Clusters(load_platform(cfg))("staging")
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cluster.create({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "theirs", "namespace": ns}, "data": {"k": "v"}})
    await create(cfg, tmp_path, {"name": "pyxis", "team": "t", "replicas": 1})
    await release(cfg, "pyxis")
    code, out, err = await kepler(cfg, "decommission", "pyxis", "--soak", "1s", "--reason", "gone")
    assert code == 0, out + err
    await _poll(cfg, "pyxis", "all", lambda s: s.get("stage") == "awaiting approval", "approval")
    code, out, err = await kepler(cfg, "approve", "pyxis", "--env", "all", user="alice")
    assert code == 0, out + err
    status = await _poll(cfg, "pyxis", "all", lambda s: s.get("stage") == "done", "the end",
                         timeout=180)
    assert status["outcome"] == "succeeded", status
    assert cluster.get("Deployment", ns, "pyxis") is None
    assert cluster.get("Namespace", None, ns) is not None
    assert cluster.get("ConfigMap", ns, "theirs")["data"] == {"k": "v"}


async def test_a_blue_green_switches_on_the_real_virtual_service_and_back(
        real_world: Any, cfg: Path, tmp_path: Path) -> None:
    """Both Deployments run side by side on the real API server; the switch and the
    switch-back are each one VirtualService write; the old version's Deployment is never
    touched in between (same generation), so switching back rolls nothing out."""
    ns = "altair-staging"
    await create(cfg, tmp_path, {"name": "altair", "team": "t", "replicas": 2,
                                 "environments": {"staging": {"strategy": "blue-green"}},
                                 "blue_green": {"interval": "10s", "post_analysis": 1}})
    v1 = (await release(cfg, "altair"))["image"]  # nothing live yet: rolled in place
    before = deployment(cfg, "altair", ns)
    project = gitlab_client(real_world.sandbox).projects.get("demo/altair")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "v2.txt", "content": "2\n"}]})
    code, out, err = await kepler(cfg, "release", "altair", "--env", "staging", "--ref", "main")
    assert code == 0, out + err
    cluster = Clusters(load_platform(cfg))("staging")
    await _poll(cfg, "altair", "staging", lambda s: s.get("stage") == "rollback window",
                "the rollback window", timeout=180)
    assert current_weights(cluster.get("VirtualService", ns, "altair")) == (0, 100, True)
    green = deployment(cfg, "altair-canary", ns)
    assert green["status"].get("readyReplicas") == 2
    assert green["spec"]["template"]["spec"]["containers"][0]["image"] != v1
    warm = deployment(cfg, "altair", ns)
    assert warm["metadata"]["generation"] == before["metadata"]["generation"]
    assert warm["status"].get("readyReplicas") == 2  # the old version, still warm

    code, out, err = await kepler(cfg, "rollback", "altair", "--env", "staging", "--watch",
                                  "-o", "json")
    assert code == 0 and json.loads(out)["outcome"] == "rolled_back", out + err
    assert current_weights(cluster.get("VirtualService", ns, "altair")) == (100, 0, False)
    after = deployment(cfg, "altair", ns)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]  # nothing rolled
    assert running(cfg, "altair", ns)[0] == v1
    assert deployment(cfg, "altair-canary", ns)["spec"]["replicas"] == 0
