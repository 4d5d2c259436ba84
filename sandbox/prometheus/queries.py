"""The PromQL the Prometheus stand-in answers: Flagger's built-in canary analysis queries.

The stand-in knows these queries as a Prometheus user would, from their text: Kepler
renders the same ones (kepler/promql.py), and tests/sandbox/test_prometheus.py sends
Kepler's renderings here, so the two cannot drift apart unnoticed. Any other query is
not recognised (`parse_builtin` returns None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REQUEST_SUCCESS_RATE = "request-success-rate"
REQUEST_DURATION = "request-duration"

# ${name} marks where a query has its namespace, workload regex and interval.
_SELECTOR = ('reporter="destination",destination_workload_namespace="${namespace}",'
             'destination_workload=~"${workload}"')
_TEMPLATES: dict[str, str] = {
    REQUEST_SUCCESS_RATE: (
        "sum(rate(istio_requests_total{" + _SELECTOR + ',response_code!~"5.*"}[${interval}]))'
        " / sum(rate(istio_requests_total{" + _SELECTOR + "}[${interval}])) * 100"),
    REQUEST_DURATION: (
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
        + _SELECTOR + "}[${interval}])) by (le))"),
}

_INTERVAL = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                 "y": 31536000}


def interval_seconds(interval: str) -> float:
    """A Prometheus duration (`1m`, `1h30m`, `500ms`) in seconds; ValueError if not one."""
    if not _INTERVAL.match(interval):
        raise ValueError(f"interval {interval!r} must be a Prometheus duration such as 1m or 30s")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(interval))


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


_PATTERNS = {metric: _pattern(t) for metric, t in _TEMPLATES.items()}


def parse_builtin(query: str) -> BuiltinQuery | None:
    """Recognise a built-in query, or None for any other PromQL."""
    for metric, pattern in _PATTERNS.items():
        m = pattern.match(query)
        if m:
            return BuiltinQuery(metric, m["namespace"], m["workload"], m["interval"])
    return None
