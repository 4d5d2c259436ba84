"""End to end: `kepler metrics` and `kepler metrics serve` over real releases — a success,
a crash rolled back, a fix, a promotion to prod — read back from the dev server's
visibility, and scraped by Debian's prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kepler import search_attributes as sa
from sandbox.serve import Sandbox
from tests.e2e.test_release import BIN, gitlab_client, kepler, wait_for_outcome, wait_for_stage
from tests.helpers import free_port, real_prometheus, wait_until
from tests.test_metrics import parse_exposition

pytestmark = pytest.mark.e2e
SERVICE = "dora7"


async def closed_releases(client: Any, env: str) -> list[Any]:
    """The service's releases in `env` as the dev server lists them, oldest first."""
    found = [wf async for wf in client.list_workflows(
        f"KeplerService = '{SERVICE}' AND KeplerEnv = '{env}' AND KeplerOperation = 'release'")]
    return sorted((wf for wf in found if wf.close_time), key=lambda wf: wf.close_time)


async def test_metrics_count_releases_failures_lead_time_and_restore(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    spec = {"name": SERVICE, "team": "ledgers", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    project = gitlab_client(sandbox).projects.get(f"demo/{SERVICE}")

    async def release(expected_code: int) -> None:
        code, out, err = await kepler(platform_file, "release", SERVICE, "--env", "staging",
                                      "--ref", "main", "--watch")
        assert code == expected_code, out + err

    await release(0)
    project.commits.create({"branch": "main", "commit_message": "crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"}]})
    await release(1)  # rolled back
    project.commits.create({"branch": "main", "commit_message": "fixed", "actions": [
        {"action": "delete", "file_path": "kepler-sandbox.yaml"}]})
    await release(0)
    # a promotion: the fix's commit, as live in staging (its time: from the staging release)
    assert (await kepler(platform_file, "release", SERVICE, "--env", "prod", "--from", "staging"))[0] == 0
    await wait_for_stage(platform_file, SERVICE, "prod", "awaiting approval")
    assert (await kepler(platform_file, "approve", SERVICE, "--env", "prod", user="alice"))[0] == 0
    assert (await wait_for_outcome(platform_file, SERVICE, "prod"))["outcome"] == "succeeded"

    # what a user would compute by hand: GitLab's commit times, Temporal's close times
    staging = await closed_releases(dev_env.client, "staging")
    (promotion,) = await closed_releases(dev_env.client, "prod")
    assert [wf.typed_search_attributes.get(sa.OUTCOME) for wf in staging] == [
        "succeeded", "rolled_back", "succeeded"]

    def committed(sha: str) -> datetime:
        return datetime.fromisoformat(project.commits.get(sha).committed_date)

    commits = [wf.typed_search_attributes.get(sa.COMMIT) for wf in staging]
    leads = [(staging[i].close_time - committed(commits[i])).total_seconds() for i in (0, 2)]
    promoted = (promotion.close_time - committed(commits[2])).total_seconds()
    restore = (staging[2].close_time - staging[1].close_time).total_seconds()

    code, out, err = await kepler(platform_file, "metrics", "--service", SERVICE, "--since", "1d",
                                  "--output", "json")
    assert code == 0, out + err
    metrics = json.loads(out)
    assert sorted(metrics) == ["prod", "staging"]
    assert all(sorted(m) == sorted(["deployment_frequency", "lead_time", "change_failure_rate",
                                    "time_to_restore"]) for m in metrics.values())
    s, p = metrics["staging"], metrics["prod"]
    assert s["deployment_frequency"] == {"deploys": 2, "days": 1.0, "per_day": 2.0}
    assert s["change_failure_rate"] == {"failed": 1, "deploys": 3, "rate": 0.3333}
    assert s["lead_time"]["samples"] == 2
    assert s["lead_time"]["median_seconds"] == pytest.approx(statistics.median(leads), abs=0.01)
    assert (s["time_to_restore"]["restores"], s["time_to_restore"]["unrestored"]) == (1, 0)
    assert s["time_to_restore"]["median_seconds"] == pytest.approx(restore, abs=0.01)
    assert p["deployment_frequency"]["deploys"] == 1
    assert p["lead_time"] == {"median_seconds": pytest.approx(promoted, abs=0.01), "samples": 1}
    assert p["change_failure_rate"] == {"failed": 0, "deploys": 1, "rate": 0.0}

    # filters: one environment; a team with nothing; the text table
    code, out, _ = await kepler(platform_file, "metrics", "--service", SERVICE, "--env", "prod",
                                "-o", "json")
    assert code == 0 and list(json.loads(out)) == ["prod"]
    code, out, _ = await kepler(platform_file, "metrics", "--service", SERVICE, "--team", "nobody",
                                "-o", "json")
    assert code == 0 and json.loads(out)["staging"]["change_failure_rate"]["deploys"] == 0
    code, out, _ = await kepler(platform_file, "metrics", "--service", SERVICE, "--team", "ledgers")
    assert code == 0 and "33% (1 of 3)" in out and "staging" in out

    # served to Prometheus: fetched and parsed, then scraped by the real prometheus
    port = free_port()
    serve = subprocess.Popen(
        [str(BIN / "kepler"), "metrics", "serve", "--port", str(port), "--service", SERVICE,
         "--since", "1d", "--refresh", "1"],
        env={**os.environ, "KEPLER_CONFIG": str(platform_file)},
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("w"))
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        await asyncio.to_thread(wait_until, lambda: _get(url) is not None, timeout=30,
                                what="kepler metrics serve")
        samples = parse_exposition(_get(url) or "")
        assert samples[("kepler_dora_change_failure_rate", "staging")] == pytest.approx(0.3333)
        assert samples[("kepler_dora_deployments", "prod")] == 1
        (tmp_path / "prom").mkdir()
        with real_prometheus(f"127.0.0.1:{port}", tmp_path / "prom") as prom:
            def scraped() -> float | None:
                r = httpx.get(f"{prom}/api/v1/query", timeout=5, params={
                    "query": 'kepler_dora_change_failure_rate{env="staging"}'}).json()
                result = r["data"]["result"]
                return float(result[0]["value"][1]) if result else None
            await asyncio.to_thread(wait_until, lambda: scraped() is not None, timeout=30,
                                    what="prometheus scraped kepler metrics serve")
            assert scraped() == pytest.approx(0.3333)
    finally:
        serve.terminate()
        serve.wait(timeout=10)


def _get(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=30)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


@pytest.mark.parametrize("args, field", [
    (["--env", "qa"], "--env"), (["--since", "91d"], "--since"), (["--since", "soon"], "--since"),
    (["--since", "30m"], "--since"), (["--output", "yaml"], "--output"),
    (["--team", "No_Team"], "--team"), (["--service", "Bad!"], "service"),
])
async def test_metrics_refuses_bad_input_with_exit_2_naming_the_field(
        tmp_path: Path, args: list[str], field: str) -> None:
    # a platform whose Temporal is nowhere: the refusal comes before anything is read
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "kepler.yaml").read_text())
    config["temporal"]["address"] = "127.0.0.1:1"
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    code, out, err = await kepler(tmp_path / "kepler.yaml", "metrics", *args)
    assert code == 2, out + err
    assert field in err
    code, _, err = await kepler(tmp_path / "kepler.yaml", "metrics", "serve", "--port", "70000")
    assert code == 2 and "--port" in err
