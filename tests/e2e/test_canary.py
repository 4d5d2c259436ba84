"""Canary end to end: the `kepler` CLI, the real dev server, the real worker and activities,
the sandbox (GitLab, Jenkins, registry, Kubernetes+Istio with simulated traffic) and the
real Prometheus (Debian's) scraping the sandbox's Istio-style metrics. A version whose
commit asks for a 20 % error rate is rolled back by the metric; a healthy one is promoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from tests.helpers import real_prometheus as start_prometheus
from tests.workers import worker_with
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e
NS = "payments-staging"


@pytest.fixture(scope="module")
def real_prometheus(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_prometheus(sandbox.urls["kubernetes"].removeprefix("http://"),
                         tmp_path_factory.mktemp("prometheus-canary")) as url:
        yield url


@pytest.fixture(scope="module")
async def canary_platform(sandbox: Sandbox, dev_env: Any, real_prometheus: str,
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
    """kepler.yaml pointed at the real Prometheus, and the real worker reading it, on its
    own task queue."""
    async with worker_with(sandbox, dev_env, tmp_path_factory.mktemp("canary-platform"),
                           "kepler-e2e-canary",
                           lambda config: config.update(prometheus={"url": real_prometheus})) as path:
        yield path


def routes_of(sandbox: Sandbox, namespace: str, service: str) -> list[dict]:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    vs = k8s.CustomObjectsApi(k8s.ApiClient(conf)).get_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", service)
    return vs["spec"]["http"]


def routes(sandbox: Sandbox) -> list[dict]:
    return routes_of(sandbox, NS, "payments")


def image_of(sandbox: Sandbox, name: str) -> tuple[str, int]:
    d = apps(sandbox).read_namespaced_deployment(name, NS)
    return d.spec.template.spec.containers[0].image, d.spec.replicas


def push_version(sandbox: Sandbox, tag: str, behaviour: dict[str, Any]) -> None:
    project = gitlab_client(sandbox).projects.get("demo/payments")
    project.commits.create({"branch": "main", "commit_message": f"{tag}: {behaviour}", "actions": [
        {"action": "update" if tag != "v2" else "create", "file_path": "kepler-sandbox.yaml",
         "content": yaml.safe_dump(behaviour)}]})
    project.tags.create({"tag_name": tag, "ref": "main"})


async def test_bad_canary_is_rolled_back_by_its_metric_and_a_good_one_promoted(
        sandbox: Sandbox, canary_platform: Path, tmp_path: Path) -> None:
    spec = {"name": "payments", "team": "payments", "template": "python", "replicas": 2}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(canary_platform, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(canary_platform, "release", "payments", "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    v1 = json.loads(out)["report"]["image"]

    code, out, err = await kepler(canary_platform, "abort", "payments", "--env", "staging")
    assert code == 3 and "no canary is running" in err

    # v2 answers 20 % of its requests with 500s: the success rate check fails.
    push_version(sandbox, "v2", {"error_rate": 0.2})
    code, out, err = await kepler(canary_platform, "canary", "payments", "--env", "staging",
                                  "--ref", "v2", "--steps", "50", "--interval", "10s",
                                  "--failure-limit", "1", "--watch", "-o", "json")
    assert code == 1, out + err
    failed = json.loads(out or err)
    assert failed["outcome"] == "rolled_back", failed
    assert "failure limit 1 reached at 50%: request-success-rate 8" in failed["error"]
    assert "< 99" in failed["error"] and "route 100% to stable" in failed["error"]
    assert image_of(sandbox, "payments") == (v1, 2)
    assert image_of(sandbox, "payments-canary")[1] == 0
    assert [r["name"] for r in routes(sandbox)] == ["primary"]
    assert [d["weight"] for d in routes(sandbox)[0]["route"]] == [100, 0]

    # v3 is healthy: it goes through the analysis and is promoted.
    push_version(sandbox, "v3", {"error_rate": 0, "latency_ms": 60})
    code, out, err = await kepler(canary_platform, "canary", "payments", "--env", "staging",
                                  "--ref", "v3", "--steps", "50", "--interval", "10s",
                                  "--watch", "-o", "json")
    assert code == 0, out + err
    report = json.loads(out)["report"]
    assert report["outcome"] == "succeeded" and report["image"] != v1
    rate, p99 = report["checks"]
    assert rate["last_value"] == pytest.approx(100, abs=0.5) and rate["last_result"] == "passed"
    assert p99["last_value"] == pytest.approx(60, rel=0.05)
    assert image_of(sandbox, "payments") == (report["image"], 2)
    assert image_of(sandbox, "payments-canary") == (report["image"], 0)
    assert [d["weight"] for d in routes(sandbox)[0]["route"]] == [100, 0]
    status = json.loads((await kepler(canary_platform, "status", "payments", "--env", "staging",
                                      "-o", "json"))[1])
    assert status["outcome"] == "succeeded" and status["canary"]["rounds"] == 1


async def test_cli_controls_against_the_prometheus_standin(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """The sandbox's own Prometheus stand-in (what `kepler dev up` and the demo use) answers
    the analysis; pause, a refused second pause, and promote through the CLI."""
    spec = {"name": "orders", "team": "shop", "template": "python", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    assert (await kepler(platform_file, "release", "orders", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0
    code, out, err = await kepler(platform_file, "canary", "orders", "--env", "staging", "--ref",
                                  "main", "--steps", "20,50", "--interval", "10s", "-o", "json")
    assert code == 0 and json.loads(out)["workflow_id"] == "orders@staging", out + err
    await wait_for_stage(platform_file, "orders", "staging", "canary 20%")
    code, out, err = await kepler(platform_file, "pause", "orders", "--env", "staging")
    assert code == 0 and "paused at 20%" in out, out + err
    code, out, err = await kepler(platform_file, "pause", "orders", "--env", "staging", "-o", "json")
    assert code == 3 and "already paused by carol" in json.loads(out)["error"]
    status = await wait_for_stage(platform_file, "orders", "staging", "paused")
    assert status["canary"]["paused"] and status["canary"]["weight"] == 20
    code, out, err = await kepler(platform_file, "promote", "orders", "--env", "staging",
                                  user="dave")
    assert code == 0 and "promoting" in out, out + err
    status = await wait_for_outcome(platform_file, "orders", "staging")
    assert status["outcome"] == "succeeded", status
    assert "promotion requested by dave" in status["notes"]
    code, out, err = await kepler(platform_file, "resume", "orders", "--env", "staging")
    assert code == 3 and "no canary is running" in err


THROUGHPUT = ('throughput:0.5:100000:sum(rate(istio_requests_total{destination_workload="$workload",'
              'destination_workload_namespace="$namespace"}[$interval]))')
GHOST = 'ghost:0:1:sum(rate(no_such_metric_total{namespace="$namespace"}[$interval]))'


async def test_custom_promql_and_every_no_data_policy_against_real_prometheus(
        sandbox: Sandbox, canary_platform: Path, tmp_path: Path) -> None:
    """A custom PromQL check ($workload, $namespace, $interval filled in) reads the real
    Prometheus; a check whose query has no data fails the canary, is skipped, or halts it
    for a human, as --no-data says."""
    cfg, ns = canary_platform, "tally9-staging"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "tally9", "team": "t", "replicas": 1}))
    assert (await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"))[0] == 0
    assert (await kepler(cfg, "release", "tally9", "--env", "staging", "--ref", "main", "--watch"))[0] == 0

    async def canary(*extra: str) -> tuple[int, dict]:
        code, out, err = await kepler(cfg, "canary", "tally9", "--env", "staging", "--ref", "main",
                                      "--steps", "50", "--interval", "10s", *extra, "--watch", "-o", "json")
        return code, json.loads(out or err)

    code, result = await canary("--metric", THROUGHPUT)
    assert code == 0, result
    throughput = next(c for c in result["report"]["checks"] if c["name"] == "throughput")
    assert throughput["last_result"] == "passed" and throughput["last_value"] > 0.5

    code, result = await canary("--metric", GHOST, "--no-data", "fail", "--failure-limit", "1")
    assert code == 1 and result["outcome"] == "rolled_back", result
    assert "ghost: no data" in result["error"]
    assert apps(sandbox).read_namespaced_deployment("tally9-canary", ns).spec.replicas == 0

    code, result = await canary("--metric", GHOST, "--no-data", "skip")
    assert code == 0, result
    ghost = next(c for c in result["report"]["checks"] if c["name"] == "ghost")
    assert ghost["last_result"] == "skipped"

    code, out, err = await kepler(cfg, "canary", "tally9", "--env", "staging", "--ref", "main", "--steps",
                                  "50", "--interval", "10s", "--metric", GHOST, "--no-data", "halt")
    assert code == 0, out + err
    status = await wait_for_stage(cfg, "tally9", "staging", "paused")
    assert status["canary"]["paused_by"] == "the no-data policy"
    assert any("no data for ghost (no-data policy: halt)" in n for n in status["notes"])
    code, out, err = await kepler(cfg, "abort", "tally9", "--env", "staging", "--reason", "no metrics")
    assert code == 0, out + err
    status = await wait_for_outcome(cfg, "tally9", "staging")
    assert status["outcome"] == "aborted", status
    assert [d["weight"] for d in routes_of(sandbox, ns, "tally9")[0]["route"]] == [100, 0]
