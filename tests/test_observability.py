"""Worker observability against the dev server and the sandbox: the Prometheus endpoint
after real releases (SDK and Kepler series), JSON logs with workflow id and service,
and OpenTelemetry spans through temporalio's TracingInterceptor."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from kepler import telemetry
from kepler.models import CreateServiceRequest, ReleaseReport, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.settings import Secrets, parse_platform
from kepler.clients.temporal import data_converter
from sandbox.serve import Sandbox
from tests.conftest import platform_yaml
from tests.helpers import decide, free_port, signed

QUEUE = "kepler-observed"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first series `name` whose labels include `labels`."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def scrape_until(url: str, check: Any, what: str, timeout: float = 30) -> str:
    """Poll the metrics endpoint without blocking the loop the in-process worker runs on."""
    deadline = asyncio.get_running_loop().time() + timeout
    text = ""
    async with httpx.AsyncClient() as http:
        while asyncio.get_running_loop().time() < deadline:
            text = (await http.get(url)).text
            if check(text):
                return text
            await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last scrape:\n{text[-3000:]}")


async def test_metrics_logs_and_traces_of_real_releases(sandbox: Sandbox, dev_env: Any) -> None:
    target = dev_env.client.service_client.config.target_host
    address = f"127.0.0.1:{free_port()}"
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    client = await Client.connect(
        target, data_converter=data_converter(), runtime=telemetry.runtime(address),
        interceptors=[TracingInterceptor(provider.get_tracer("kepler-test"))])
    platform = parse_platform(platform_yaml(sandbox.urls, target, QUEUE))
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(telemetry.JsonFormatter())
    logging.getLogger().addHandler(handler)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)

    from worker import build_worker

    service = f"m{uuid.uuid4().hex[:8]}"
    spec = ServiceSpec.model_validate({"name": service, "team": "obs", "template": "python",
                                       "replicas": 1, "owners": ["alice"]})
    try:
        with ThreadPoolExecutor(max_workers=64) as executor:
            async with build_worker(client, platform, Secrets(), executor):
                await client.execute_workflow("CreateService", CreateServiceRequest(
                    spec=spec, requested_by="carol"), id=f"{service}@all", task_queue=QUEUE,
                    result_type=ReleaseReport)
                report = await client.execute_workflow("ReleaseVersion", ReleaseRequest(
                    service=service, env="staging", ref="main", requested_by="carol"),
                    id=f"{service}@staging", task_queue=QUEUE, result_type=ReleaseReport)
                assert report.outcome == "succeeded"

                prod = await client.start_workflow("ReleaseVersion", signed(ReleaseRequest(
                    service=service, env="prod", ref="main", requested_by="carol")),
                    id=f"{service}@prod", task_queue=QUEUE, result_type=ReleaseReport)
                metrics_url = f"http://{address}/metrics"
                await scrape_until(metrics_url, lambda text: sample(
                    text, "kepler_approvals_pending", service=service, env="prod") == 1.0,
                    "kepler_approvals_pending to show the prod release")
                await decide(client, service, "prod", "alice")
                assert (await prod.result()).outcome == "succeeded"
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)

    text = httpx.get(metrics_url).text
    ok = {"operation": "release", "service": service, "outcome": "succeeded"}
    assert sample(text, "kepler_operations_total", env="staging", **ok) == 1.0
    assert sample(text, "kepler_operations_total", env="prod", **ok) == 1.0
    assert sample(text, "kepler_operations_total", env="all", operation="create", service=service,
                  outcome="succeeded") == 1.0
    assert sample(text, "kepler_operation_duration_seconds_count", env="staging", **ok) == 1.0
    assert sample(text, "kepler_operation_duration_seconds_bucket", env="staging", le="+Inf", **ok) == 1.0
    assert sample(text, "kepler_approvals_pending", service=service, env="prod") == 0.0
    assert "# TYPE kepler_canary_rollbacks_total counter" in text or "kepler_canary_rollbacks" not in text
    # the SDK's own series, from the same endpoint
    assert sample(text, "temporal_workflow_completed_total", workflow_type="ReleaseVersion",
                  task_queue=QUEUE) == 2.0
    assert sample(text, "temporal_activity_execution_latency_count",
                  activity_type="kubernetes.deploy_release", task_queue=QUEUE) is not None

    entries = [json.loads(line) for line in logs.getvalue().splitlines() if line.strip()]
    mine = [e for e in entries if e.get("workflow_id") == f"{service}@prod"]
    assert mine and all(e["service"] == service and e["env"] == "prod" for e in mine)
    assert any("awaiting_approval" in e["message"] for e in mine)
    assert "sandbox-gitlab-token" not in logs.getvalue()

    names = {s.name for s in spans.get_finished_spans()}
    assert {"StartWorkflow:ReleaseVersion", "RunWorkflow:ReleaseVersion",
            "StartActivity:kubernetes.deploy_release", "RunActivity:kubernetes.deploy_release"} <= names


def test_dashboard_queries_only_series_the_worker_exports() -> None:
    board = json.loads((Path(__file__).resolve().parent.parent / "deploy/grafana/kepler.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 6
    used = {m for e in exprs for m in re.findall(r"\b((?:kepler|temporal)_[a-z_]+)", e)}
    known = {"kepler_operations_total", "kepler_operation_duration_seconds_bucket",
             "kepler_approvals_pending", "kepler_canary_rollbacks_total",
             "temporal_activity_execution_latency_bucket", "temporal_activity_execution_failed_total",
             "temporal_workflow_completed_total", "temporal_workflow_failed_total",
             "temporal_worker_task_slots_available", "temporal_activity_schedule_to_start_latency_bucket",
             "temporal_workflow_endtoend_latency_bucket"}
    assert used <= known, used - known
    assert {"kepler_operations_total", "kepler_approvals_pending", "kepler_canary_rollbacks_total",
            "kepler_operation_duration_seconds_bucket"} <= used

