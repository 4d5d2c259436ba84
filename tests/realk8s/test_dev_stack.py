"""`kepler dev up --cluster real` as a user runs it: the stack on a real control plane, a
service created and released through the CLI onto it, and `kepler dev down` stopping all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.cluster import binaries_dir
from tests.cli.test_dev_stack import dev_home, kepler  # noqa: F401 - the fixture
from tests.conftest import require_cluster_built

pytestmark = pytest.mark.realk8s


def kubectl(kubeconfig: str, *args: str) -> str:
    bin_dir = binaries_dir()
    assert bin_dir is not None
    result = subprocess.run([str(bin_dir / "kubectl"), "--kubeconfig", kubeconfig, *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dev_up_on_the_real_cluster_creates_and_releases_through_the_cli(
        dev_home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    require_cluster_built()  # dev up starts its own control plane
    up = kepler(dev_home, "dev", "up", "--cluster", "real", "--output", "json")
    assert up.returncode == 0, up.stderr + up.stdout
    state = json.loads(up.stdout)
    kubeconfig = state["sandbox"]["kubeconfig"]
    assert all(state[c]["running"] for c in ("temporal", "sandbox", "worker")), state
    assert "kubernetes" not in state["sandbox"]["urls"]  # the real cluster serves it
    config = yaml.safe_load(Path(state["worker"]["config"]).read_text())
    assert {e["cluster"]["kubeconfig"] for e in config["environments"].values()} == {kubeconfig}
    assert "kwok-node-0" in kubectl(kubeconfig, "get", "nodes")

    cli = {**dev_home, "KEPLER_CONFIG": state["worker"]["config"], "KEPLER_USER": "dev"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "orbit", "team": "space", "replicas": 2}))
    created = kepler(cli, "service", "create", "-f", str(spec), "--watch")
    assert created.returncode == 0, created.stderr + created.stdout
    released = kepler(cli, "release", "orbit", "--env", "staging", "--ref", "main", "--watch")
    assert released.returncode == 0, released.stderr + released.stdout
    deploy = json.loads(kubectl(kubeconfig, "get", "deploy", "orbit", "-n", "orbit-staging",
                                "-o", "json"))
    assert deploy["status"]["availableReplicas"] == 2
    assert "@sha256:" in deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "successfully rolled out" in kubectl(kubeconfig, "rollout", "status", "deploy/orbit",
                                                "-n", "orbit-staging", "--timeout=60s")

    assert kepler(dev_home, "dev", "down").returncode == 0
    gone = subprocess.run([str(binaries_dir() / "kubectl"), "--kubeconfig", kubeconfig,
                           "get", "nodes", "--request-timeout=3s"],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0  # the control plane stopped with the sandbox


def test_dev_up_real_without_the_build_says_how_to_build_it(
        dev_home: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = {**dev_home, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    up = kepler(env, "dev", "up", "--cluster", "real")
    assert up.returncode == 1
    assert "make cluster" in up.stderr + up.stdout, up.stderr + up.stdout
    status = json.loads(kepler(env, "dev", "status", "--output", "json").stdout)
    assert not status["sandbox"]["running"]
