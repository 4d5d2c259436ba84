"""The built-in canary analysis queries (Flagger's), as PromQL templates.

The one place they are written: the canary analysis renders them for a real
Prometheus, and the Prometheus stand-in recognises exactly these renderings
(`parse_builtin`) and answers them from the sandbox's simulation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
        if not _NAMESPACE.match(name):
            raise ValueError(f"workload name {name!r} must be a DNS-1123 label")
    return "|".join(names)


def interval_seconds(interval: str) -> float:
    if not _INTERVAL.match(interval):
        raise ValueError(f"interval {interval!r} must be a Prometheus duration such as 1m or 30s")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(interval))


def render(metric: str, namespace: str, workload: str, interval: str) -> str:
    """The PromQL of built-in `metric` for workloads matching `workload` (a regex or a name)."""
    if metric not in TEMPLATES:
        raise ValueError(f"unknown built-in metric {metric!r}; known: {', '.join(TEMPLATES)}")
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace {namespace!r} must be a DNS-1123 label")
    if '"' in workload or "\\" in workload:
        raise ValueError("workload regex must not contain quotes or backslashes")
    interval_seconds(interval)
    return Template(TEMPLATES[metric]).substitute(namespace=namespace, workload=workload,
                                                  interval=interval)


@dataclass(frozen=True)
class BuiltinQuery:
    metric: str
    namespace: str
    workload: str  # a regular expression, fully anchored as PromQL's =~
    interval: str

    @property
    def seconds(self) -> float:
        return interval_seconds(self.interval)


def _pattern(template: str) -> re.Pattern[str]:
    text = re.escape(template)
    for name, group in (("namespace", r"(?P<namespace>[a-z0-9-]+)"),
                        ("workload", r'(?P<workload>[^"\\]*)'),
                        ("interval", r"(?P<interval>[0-9a-z]+)")):
        escaped = re.escape("${" + name + "}")
        text = text.replace(escaped, group, 1)
        text = text.replace(escaped, f"(?P={name})")
    # Whitespace is insignificant in PromQL: accept any amount where the template has some.
    text = text.replace(r"\ ", r"\s*")
    return re.compile(r"^\s*" + text + r"\s*$")


_PATTERNS = {metric: _pattern(t) for metric, t in TEMPLATES.items()}


def parse_builtin(query: str) -> BuiltinQuery | None:
    """Recognise a rendering of a built-in query, or None for any other PromQL."""
    for metric, pattern in _PATTERNS.items():
        m = pattern.match(query)
        if m:
            return BuiltinQuery(metric, m["namespace"], m["workload"], m["interval"])
    return None


def render_custom(query: str, namespace: str, workload: str, interval: str, service: str) -> str:
    """A custom check's PromQL with `$namespace`, `$workload`, `$service` and `$interval`
    filled in (string.Template; `$$` is a literal dollar sign)."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace {namespace!r} must be a DNS-1123 label")
    interval_seconds(interval)
    return Template(query).safe_substitute(namespace=namespace, workload=workload,
                                           interval=interval, service=service)


def duration(seconds: float) -> str:
    """A Prometheus duration for a number of seconds (whole seconds, at least 1s)."""
    return f"{max(1, int(seconds))}s"
