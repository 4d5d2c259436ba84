"""The built-in canary analysis queries (Flagger's), as PromQL templates.

The canary analysis renders them for a real Prometheus. The Prometheus stand-in
recognises them by their text as a Prometheus user would (sandbox/prometheus/queries.py,
its own reading); tests/sandbox/test_prometheus.py sends these renderings there, so the
two cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from string import Template

REQUEST_SUCCESS_RATE = "request-success-rate"
REQUEST_DURATION = "request-duration"

# string.Template placeholders: PromQL itself is full of braces.
_SELECTOR = ('reporter="destination",destination_workload_namespace="${namespace}",'
             'destination_workload=~"${workload}"')

TEMPLATES: dict[str, str] = {
    # Percentage of requests not answered 5xx (0..100).
    REQUEST_SUCCESS_RATE: (
        "sum(rate(istio_requests_total{" + _SELECTOR + ',response_code!~"5.*"}[${interval}]))'
        " / sum(rate(istio_requests_total{" + _SELECTOR + "}[${interval}])) * 100"),
    # 99th percentile request duration in milliseconds.
    REQUEST_DURATION: (
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
        + _SELECTOR + "}[${interval}])) by (le))"),
}

# Default thresholds of the built-ins: what a canary checks unless the request sets them.
THRESHOLDS: dict[str, tuple[str, float]] = {
    REQUEST_SUCCESS_RATE: ("min", 99.0),
    REQUEST_DURATION: ("max", 500.0),
}

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_INTERVAL = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                 "y": 31536000}


def workload_regex(*names: str) -> str:
    """A `destination_workload=~` regex matching exactly these workload names."""
    for name in names:
        if not _NAMESPACE.fullmatch(name):
            raise ValueError(f"workload name {name!r} must be a DNS-1123 label")
    return "|".join(names)


def interval_seconds(interval: str) -> float:
    if not _INTERVAL.fullmatch(interval):
        raise ValueError(f"interval {interval!r} must be a Prometheus duration such as 1m or 30s")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(interval))


def render(metric: str, namespace: str, workload: str, interval: str) -> str:
    """The PromQL of built-in `metric` for workloads matching `workload` (a regex or a name)."""
    if metric not in TEMPLATES:
        raise ValueError(f"unknown built-in metric {metric!r}; known: {', '.join(TEMPLATES)}")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} must be a DNS-1123 label")
    if '"' in workload or "\\" in workload:
        raise ValueError("workload regex must not contain quotes or backslashes")
    interval_seconds(interval)
    return Template(TEMPLATES[metric]).substitute(namespace=namespace, workload=workload,
                                                  interval=interval)


def render_custom(query: str, namespace: str, workload: str, interval: str, service: str) -> str:
    """A custom check's PromQL with `$namespace`, `$workload`, `$service` and `$interval`
    filled in (string.Template; `$$` is a literal dollar sign)."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace {namespace!r} must be a DNS-1123 label")
    interval_seconds(interval)
    return Template(query).safe_substitute(namespace=namespace, workload=workload,
                                           interval=interval, service=service)


def duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds (whole seconds, at least 1s)."""
    return f"{max(1, int(seconds))}s"
