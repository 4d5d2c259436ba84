"""Kepler's own metrics, recorded from workflows through the SDK's metric meter.

Deterministic and replay-safe: the SDK drops workflow metrics while replaying, so a
workflow that moves between workers is counted once. Exported with the SDK's series on
the worker's Prometheus endpoint (kepler/telemetry.py).
"""

from __future__ import annotations

from temporalio import workflow


def _attrs(operation: str, service: str, env: str) -> dict[str, str]:
    return {"operation": operation, "service": service, "env": env}


def operation_finished(operation: str, service: str, env: str, outcome: str) -> None:
    """One operation ended: count it by outcome and record how long it took."""
    meter = workflow.metric_meter()
    attrs = {**_attrs(operation, service, env), "outcome": outcome}
    seconds = (workflow.now() - workflow.info().start_time).total_seconds()
    meter.create_counter("kepler_operations", "Kepler operations that ended, by outcome").add(1, attrs)
    meter.create_histogram_float("kepler_operation_duration_seconds",
                                 "Time from start to end of a Kepler operation", "s").record(
        max(seconds, 0.0), attrs)
    if operation == "canary" and outcome == "rolled_back":
        meter.create_counter("kepler_canary_rollbacks", "Canaries aborted and rolled back").add(
            1, {"service": service, "env": env})


def approval_pending(operation: str, service: str, env: str, pending: bool) -> None:
    """1 while an operation waits for approval, 0 once decided or expired."""
    workflow.metric_meter().create_gauge(
        "kepler_approvals_pending", "Operations waiting for approval").set(
        1 if pending else 0, _attrs(operation, service, env))
