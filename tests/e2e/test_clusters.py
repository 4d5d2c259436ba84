"""End to end with two clusters: staging and prod each on its own Kubernetes stand-in
(SandboxSettings.clusters), as a user drives them through the `kepler` CLI: create,
release to each, approve, scale and resources (with bounds), a release train.
Each cluster's audit log proves its objects changed only there."""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.conftest import platform_yaml
from tests.e2e.test_release import kepler

pytestmark = pytest.mark.e2e
TOKEN_ENV = "KEPLER_TEST_PROD_CLUSTER_TOKEN"


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(SandboxSettings(state_dir=tmp_path_factory.mktemp("clusters"),
                                  clusters=("staging", "prod"))).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def clusters_platform(two_clusters: Sandbox, dev_env, tmp_path_factory) -> Path:
    urls = two_clusters.urls
    data = yaml.safe_load(platform_yaml(urls, dev_env.client.service_client.config.target_host,
                                        "kepler-clusters"))
    data["environments"]["prod"]["cluster"] = {"server": urls["kubernetes-prod"],
                                               "token_env": TOKEN_ENV}
    path = tmp_path_factory.mktemp("clusters-platform") / "kepler.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
async def clusters_worker(clusters_platform: Path, dev_env) -> AsyncIterator[None]:
    from kepler.settings import Secrets, load_platform
    from worker import build_worker

    os.environ[TOKEN_ENV] = "prod-cluster-token"
    platform = load_platform(clusters_platform)
    with ThreadPoolExecutor(max_workers=64) as executor:
        async with build_worker(dev_env.client, platform, Secrets(), executor):
            yield


def apps(box: Sandbox, cluster: str) -> k8s.AppsV1Api:
    conf = k8s.Configuration()
    conf.host = box.urls[cluster]
    return k8s.AppsV1Api(k8s.ApiClient(conf))


def namespaces(box: Sandbox, cluster: str) -> set[str]:
    conf = k8s.Configuration()
    conf.host = box.urls[cluster]
    return {n.metadata.name for n in k8s.CoreV1Api(k8s.ApiClient(conf)).list_namespace().items}


def touched(box: Sandbox, cluster: str) -> set[str]:
    """Every namespace (or namespace object) the cluster's audit log saw change."""
    return {e.get("namespace") or e["name"] for e in box.world.audits[cluster].entries
            if e.get("kind") != "Namespace" or e["name"].startswith(("ledger", "billing"))}


async def status_of(platform: Path, workflow: str, env: str) -> dict:
    code, out, _ = await kepler(platform, "status", workflow, "--env", env, "-o", "json")
    return json.loads(out) if out.strip() else {}


async def until(platform: Path, workflow: str, env: str, check: Any, what: str,
                timeout: float = 120) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    last: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        last = await status_of(platform, workflow, env)
        if last and check(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow}@{env} never reached {what}; last {last}")


async def test_two_clusters_release_scale_resources_and_a_train(
        two_clusters: Sandbox, clusters_platform: Path, clusters_worker: Any, tmp_path: Path) -> None:
    box, cfg = two_clusters, clusters_platform
    assert box.urls["kubernetes"] != box.urls["kubernetes-prod"]
    for name in ("ledger", "billing"):
        spec = {"name": name, "team": "payments", "replicas": 1, "owners": ["alice"],
                "config_files": {"app.conf": f"{name}\n"}, "environments": {"prod": {"replicas": 2}}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec))
        code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / f"{name}.yaml"),
                                      "--watch")
        assert code == 0, out + err
    # each environment's objects live in its own cluster only
    assert {"ledger-staging", "billing-staging"} <= namespaces(box, "kubernetes")
    assert not {"ledger-prod", "billing-prod"} & namespaces(box, "kubernetes")
    assert {"ledger-prod", "billing-prod"} <= namespaces(box, "kubernetes-prod")
    assert not {"ledger-staging", "billing-staging"} & namespaces(box, "kubernetes-prod")

    code, out, err = await kepler(cfg, "release", "ledger", "--env", "staging", "--ref", "main",
                                  "--watch", "-o", "json")
    assert code == 0, out + err
    image = json.loads(out)["report"]["image"]
    assert apps(box, "kubernetes").read_namespaced_deployment("ledger", "ledger-staging") \
        .spec.template.spec.containers[0].image == image
    prod_before = apps(box, "kubernetes-prod").read_namespaced_deployment("ledger", "ledger-prod")
    assert prod_before.spec.replicas == 0 and prod_before.spec.template.spec.containers[0].image != image

    staging_version = apps(box, "kubernetes").read_namespaced_deployment(
        "ledger", "ledger-staging").metadata.resource_version
    code, out, err = await kepler(cfg, "release", "ledger", "--env", "prod", "--ref", "main")
    assert code == 0, err
    await until(cfg, "ledger", "prod", lambda s: s.get("stage") == "awaiting approval", "approval")
    code, out, err = await kepler(cfg, "approve", "ledger", "--env", "prod", user="alice")
    assert code == 0, err
    assert (await until(cfg, "ledger", "prod", lambda s: s.get("outcome", "running") != "running", "the end"))[
        "outcome"] == "succeeded"
    prod = apps(box, "kubernetes-prod").read_namespaced_deployment("ledger", "ledger-prod")
    assert prod.spec.template.spec.containers[0].image == image and prod.status.available_replicas == 2
    assert apps(box, "kubernetes").read_namespaced_deployment(
        "ledger", "ledger-staging").metadata.resource_version == staging_version  # untouched

    # scale and resources in prod, within its bounds (kepler.yaml: prod max_replicas 10)
    code, out, err = await kepler(cfg, "scale", "ledger", "--env", "prod", "--replicas", "11")
    assert code == 2 and "--replicas: 11 is over prod's maximum of 10" in err
    code, out, err = await kepler(cfg, "resources", "ledger", "--env", "prod", "--memory", "16Gi")
    assert code == 2 and "--memory: 16Gi is over prod's maximum of 8Gi" in err
    code, out, err = await kepler(cfg, "scale", "ledger", "--env", "prod", "--replicas", "0")
    assert code == 2 and "--replicas: 0 is under prod's minimum of 1" in err
    assert (await status_of(cfg, "ledger", "prod"))["operation"] == "release"  # nothing started
    # prod requires approval: a scale and a resources change wait for an approver too
    watching = asyncio.create_task(kepler(cfg, "scale", "ledger", "--env", "prod", "--replicas",
                                          "4", "--reason", "peak", "--watch", "-o", "json"))
    await until(cfg, "ledger", "prod", lambda s: s.get("operation") == "scale"
                and s.get("stage") == "awaiting approval", "the scale's approval")
    assert apps(box, "kubernetes-prod").read_namespaced_deployment(
        "ledger", "ledger-prod").spec.replicas == 2  # nothing changes before it
    code, out, err = await kepler(cfg, "approve", "ledger", "--env", "prod", user="alice")
    assert code == 0, err
    code, out, err = await watching
    assert code == 0, out + err
    assert json.loads(out)["report"]["previous_replicas"] == 2
    watching = asyncio.create_task(kepler(cfg, "resources", "ledger", "--env", "prod", "--cpu",
                                          "250m", "--memory", "512Mi", "--watch"))
    await until(cfg, "ledger", "prod", lambda s: s.get("operation") == "resources"
                and s.get("stage") == "awaiting approval", "the resources' approval")
    code, out, err = await kepler(cfg, "approve", "ledger", "--env", "prod", user="bob")
    assert code == 0, err
    code, out, err = await watching
    assert code == 0, out + err
    prod = apps(box, "kubernetes-prod").read_namespaced_deployment("ledger", "ledger-prod")
    assert prod.spec.replicas == 4 and prod.status.available_replicas == 4
    assert prod.spec.template.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert apps(box, "kubernetes").read_namespaced_deployment("ledger", "ledger-staging").spec.replicas == 1
    rows = json.loads((await kepler(cfg, "history", "ledger", "--env", "prod", "-o", "json"))[1])
    assert [(r["operation"], r["requested_by"]) for r in rows[:2]] == [("resources", "carol"),
                                                                       ("scale", "carol")]

    # a train to prod (of what staging runs: prod takes only that): one approval for both;
    # the scale-out and resources survive the release
    code, out, err = await kepler(cfg, "release", "billing", "--env", "staging", "--ref", "main",
                                  "--watch")
    assert code == 0, out + err
    billing_staging = apps(box, "kubernetes").read_namespaced_deployment(
        "billing", "billing-staging").metadata.resource_version
    train = {"name": "payday", "env": "prod", "members": [
        {"service": "ledger", "ref": "main"},
        {"service": "billing", "ref": "main", "depends_on": ["ledger"]}]}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    watching = asyncio.create_task(kepler(cfg, "train", "-f", str(tmp_path / "train.yaml"), "--watch",
                                          "-o", "json"))
    await until(cfg, "train-payday", "prod", lambda s: s.get("stage") == "awaiting approval", "approval")
    code, out, err = await kepler(cfg, "approve", "train-payday", "--env", "prod", user="bob")
    assert code == 0, err
    code, out, err = await watching
    assert code == 0, out + err
    report = json.loads(out)["report"]
    assert [(m["service"], m["outcome"]) for m in report["members"]] == [
        ("ledger", "succeeded"), ("billing", "succeeded")]
    billing = await status_of(cfg, "billing", "prod")
    assert billing["pending_approval"] is None and any(
        s["name"] == "approval" and s["outcome"] == "skipped" for s in billing["steps"])
    prod = apps(box, "kubernetes-prod").read_namespaced_deployment("ledger", "ledger-prod")
    assert prod.spec.replicas == 4
    assert prod.spec.template.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert apps(box, "kubernetes-prod").read_namespaced_deployment(
        "billing", "billing-prod").status.available_replicas == 2
    assert apps(box, "kubernetes").read_namespaced_deployment(  # staging untouched by the train
        "billing", "billing-staging").metadata.resource_version == billing_staging

    # the audit logs: every change in each cluster was to its own environment's namespaces
    assert touched(box, "kubernetes") and all(ns.endswith("-staging") for ns in touched(box, "kubernetes"))
    assert touched(box, "kubernetes-prod") and all(
        ns.endswith("-prod") for ns in touched(box, "kubernetes-prod"))
