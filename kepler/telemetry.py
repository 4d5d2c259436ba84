"""Worker observability: Prometheus metrics, structured JSON logs, optional tracing.

- Metrics (`KEPLER_METRICS_ADDRESS`, e.g. `0.0.0.0:9464`): the Temporal SDK runtime's
  Prometheus exporter serves `/metrics` with the SDK's series (`temporal_*`: workflow
  and activity latencies, task slots, polls, failures) and Kepler's own, recorded through
  the SDK's metric meter from workflows (workflows/common/metrics.py): `kepler_operations_total`
  (operation, service, env, outcome), `kepler_operation_duration_seconds` (histogram),
  `kepler_approvals_pending` (gauge), `kepler_canary_rollbacks_total`.
- Logs (`KEPLER_LOG_FORMAT=json`): one JSON object a line, with the workflow id, run id,
  the service and environment (from the `<service>@<env>` id), activity type and attempt.
- Tracing (`KEPLER_TRACING=1`, needs the `tracing` extra): temporalio's OpenTelemetry
  TracingInterceptor on the client and worker; spans go to the global tracer provider,
  exported over OTLP when `opentelemetry-exporter-otlp` is installed and
  `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600]


def runtime(metrics_address: str | None = None) -> Runtime | None:
    """A Temporal runtime exporting Prometheus metrics on `metrics_address`, or None."""
    address = metrics_address or os.environ.get("KEPLER_METRICS_ADDRESS", "")
    if not address:
        return None
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(
            bind_address=address, counters_total_suffix=True, durations_as_seconds=True,
            histogram_bucket_overrides={"kepler_operation_duration_seconds": DURATION_BUCKETS}),
        global_tags={"kepler_component": "worker"}))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, carrying Temporal's workflow/activity context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        context = (getattr(record, "temporal_workflow", None)
                   or getattr(record, "temporal_activity", None) or _current_activity())
        if isinstance(context, dict):
            for key in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt",
                        "task_queue", "namespace"):
                if context.get(key) is not None:
                    entry[key] = context[key]
        workflow_id = entry.get("workflow_id", "")
        if "@" in workflow_id:
            entry["service"], _, entry["env"] = workflow_id.partition("@")
        for key in ("service", "env"):  # explicit extra= wins
            if getattr(record, key, None):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _current_activity() -> dict[str, Any] | None:
    """Context for plain `logging` calls made inside an activity (same thread)."""
    from temporalio import activity

    if not activity.in_activity():
        return None
    info = activity.info()
    return {"workflow_id": info.workflow_id, "run_id": info.workflow_run_id,
            "workflow_type": info.workflow_type, "activity_type": info.activity_type,
            "attempt": info.attempt, "task_queue": info.task_queue}


def configure_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    fmt = fmt or os.environ.get("KEPLER_LOG_FORMAT", "text")
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def tracing_interceptors() -> list[Any]:
    """[TracingInterceptor] when KEPLER_TRACING=1 and OpenTelemetry is installed, else []."""
    if os.environ.get("KEPLER_TRACING", "") not in ("1", "true", "yes"):
        return []
    try:
        from opentelemetry import trace
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError:
        logging.getLogger("kepler.telemetry").warning(
            "KEPLER_TRACING is set but OpenTelemetry is not installed (pip install 'kepler[tracing]')")
        return []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": "kepler-worker"}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
        except ImportError:
            logging.getLogger("kepler.telemetry").warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-exporter-otlp is not installed")
    return [TracingInterceptor()]
