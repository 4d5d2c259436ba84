"""The spine: both Temporal servers, the converter, settings, models, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from kepler import search_attributes as sa
from kepler.models import ApprovalDecision, CanaryRequest, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.settings import ConfigError, load_platform, parse_platform
from tests.fakes.sample_workflows import SleepsADay

ROOT = Path(__file__).resolve().parent.parent


async def _run_sleeper(env) -> tuple[ApprovalDecision, float]:
    import time

    queue = f"q-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[SleepsADay]):
        start = time.monotonic()
        result = await env.client.execute_workflow(
            SleepsADay.run, ApprovalDecision(approver="alice"), id=f"wf-{uuid.uuid4()}",
            task_queue=queue)
        return result, time.monotonic() - start


async def test_time_skipping_server_skips_a_day(time_env) -> None:
    result, elapsed = await _run_sleeper(time_env)
    assert isinstance(result, ApprovalDecision)  # the pydantic converter round-trips models
    assert result.approver == "alice"
    assert elapsed < 5, f"a one-day timer took {elapsed:.1f}s on the time-skipping server"


async def test_dev_server_runs_workflows_and_knows_kepler_attributes(dev_env) -> None:
    queue = f"q-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[SleepsADay]):
        handle = await dev_env.client.start_workflow(
            SleepsADay.run, ApprovalDecision(approver="bob"), id=f"wf-{uuid.uuid4()}",
            task_queue=queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.SERVICE, "shop")]),
        )
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(sa.SERVICE) == "shop"
        await handle.terminate("test done")


def test_models_name_field_and_rule() -> None:
    with pytest.raises(ValidationError) as e:
        ReleaseRequest(service="Shop_1", env="prod", ref="main", requested_by="alice")
    assert "service" in str(e.value) and "DNS-1035" in str(e.value)
    with pytest.raises(ValidationError, match="40 characters"):
        ServiceSpec(name="a" * 41, team="t")
    for bad_ref in ("a..b", "-x", "x.lock", "a b", "x:y", "refs/heads/", "@"):
        with pytest.raises(ValidationError, match="git ref"):
            ReleaseRequest(service="shop", env="prod", ref=bad_ref, requested_by="alice")
    with pytest.raises(ValidationError, match="64 hex"):
        RollbackRequest(service="shop", env="prod", target="sha256:abc", requested_by="al")
    with pytest.raises(ValidationError, match="at least 10s"):
        CanaryRequest(service="shop", env="prod", ref="v2", requested_by="al", interval="5s")
    with pytest.raises(ValidationError, match="host is required"):
        ServiceSpec(name="shop", team="t", exposure="external")
    ok = ReleaseRequest(service="shop", env="prod", ref="release/v1.2", requested_by="alice")
    assert ok.ref == "release/v1.2"
    assert CanaryRequest(service="s", env="e", ref="r", requested_by="u").weights() == [10, 20, 30, 40, 50]


def test_sample_platform_file_is_valid() -> None:
    platform = load_platform(ROOT / "kepler.yaml")
    assert set(platform.environments) >= {"staging", "prod"}
    assert platform.environments["prod"].approval.required


def test_broken_platform_file_names_line_and_field() -> None:
    text = (ROOT / "kepler.yaml").read_text().replace("min_approvals: 1", "min_approvals: 0")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "min_approvals: 0" in l)
    with pytest.raises(ConfigError) as e:
        parse_platform(text, "kepler.yaml")
    assert f"kepler.yaml:{line}: environments.prod.approval.min_approvals" in str(e.value)
    with pytest.raises(ConfigError, match=r"kepler.yaml:2: invalid YAML"):
        parse_platform("a: [1,\n b", "kepler.yaml")
    with pytest.raises(ConfigError, match="environments: Field required"):
        parse_platform("gitlab: {url: x}\njenkins: {url: y}\nregistry: {url: z, host: z}\n")
    # a verification with no Prometheus to ask would pass every release silently
    no_prometheus = "gitlab: {url: x}\njenkins: {url: y}\nregistry: {url: z, host: z}\n" \
        "environments: {prod: {cluster: {server: 'http://k'}, verify_with_prometheus: true}}\n"
    with pytest.raises(ConfigError, match="environments.prod.verify_with_prometheus needs "
                                          "prometheus.url"):
        parse_platform(no_prometheus)


def _kepler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from starter.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_lists_design_commands_and_unbuilt_ones_exit_2() -> None:
    out = _kepler("--help")
    assert out.returncode == 0
    for command in ("dev", "worker", "demo", "service", "release", "rollback", "canary", "pause",
                    "resume", "promote", "abort", "approve", "reject", "decommission", "restore",
                    "status", "history", "cancel"):
        assert command in out.stdout, command
    missing = _kepler("release")
    assert missing.returncode == 2 and "Missing argument" in missing.stderr + missing.stdout
