"""Prometheus stand-in: `/api/v1/query` for exactly the built-in analysis queries.

It recognises Flagger's built-in queries (sandbox/prometheus/queries.py, the ones
kepler/promql.py renders) and evaluates them from the Kubernetes stand-in's traffic
simulation (shared in-process through `world.components["kubernetes"]`), the way
Prometheus would from scraped samples: rate over the window, sum, ratio or
histogram_quantile. Any other PromQL gets
400 bad_data (point Kepler at a real Prometheus for custom queries); no matching
series gives an empty vector.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.kubernetes.traffic import BUCKETS, Series, SeriesKey, Traffic
from sandbox.prometheus.queries import REQUEST_SUCCESS_RATE, BuiltinQuery, parse_builtin
from sandbox.world import World

MIN_SPAN_S = 0.5  # two samples closer than this make no rate


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def window_rates(traffic: Traffic, q: BuiltinQuery, now: float) -> list[tuple[Series, float]]:
    """Per matching series: (increase over the window, its span in seconds)."""
    traffic.advance(now)
    pattern = re.compile(f"^(?:{q.workload})$")
    start = now - q.seconds
    result = []
    for key, current in traffic.series.items():
        if not _selected(key, q.namespace, pattern):
            continue
        first = next(((t, snap[key]) for t, snap in traffic.samples
                      if t >= start and key in snap), None)
        if first is None or now - first[0] < MIN_SPAN_S:
            continue
        t0, old = first
        increase = Series(current.ok - old.ok, current.errors - old.errors,
                          [c - o for c, o in zip(current.buckets or [], old.buckets or [])],
                          current.sum_ms - old.sum_ms)
        result.append((increase, now - t0))
    return result


def _selected(key: SeriesKey, namespace: str, pattern: re.Pattern[str]) -> bool:
    ns, workload, _, _ = key
    return ns == namespace and bool(pattern.match(workload))


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    for i, (upper, count) in enumerate(buckets):
        if count >= rank:
            if upper == math.inf:
                return buckets[-2][0]
            lower, below = (0.0, 0.0) if i == 0 else buckets[i - 1]
            if i == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
    return buckets[-2][0]


def evaluate(traffic: Traffic, q: BuiltinQuery, now: float) -> float | None:
    rates = window_rates(traffic, q, now)
    if not rates:
        return None
    if q.metric == REQUEST_SUCCESS_RATE:
        ok = sum(s.ok / span for s, span in rates)
        total = sum(s.count / span for s, span in rates)
        return ok / total * 100 if total > 0 else math.nan
    cumulative = [0.0] * len(BUCKETS)
    count = 0.0
    for s, span in rates:
        for i, value in enumerate(s.buckets or []):
            cumulative[i] += value / span
        count += s.count / span
    return histogram_quantile(0.99, list(zip(BUCKETS, cumulative)) + [(math.inf, count)])


def _error(message: str, status: int = 400, kind: str = "bad_data") -> Response:
    return JSONResponse({"status": "error", "errorType": kind, "error": message},
                        status_code=status)


class PrometheusApi:
    """The query API over the simulation of the first Kubernetes cluster."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/query", self.query, methods=["GET", "POST"]),
            Route("/api/v1/status/buildinfo", self.buildinfo),
            Route("/-/ready", self.ready),
            Route("/-/healthy", self.ready),
        ]

    async def query(self, request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            # application/x-www-form-urlencoded, parsed here (no multipart dependency)
            params.update(parse_qsl((await request.body()).decode("utf-8", "replace")))
        text = params.get("query", "")
        if not text:
            return _error("invalid parameter \"query\": query is empty")
        parsed = parse_builtin(text)
        if parsed is None:
            return _error("the sandbox Prometheus answers only Kepler's built-in analysis "
                          "queries (request-success-rate, request-duration); this query "
                          "needs a real Prometheus")
        sim = self.world.components.get("kubernetes")
        now = time.time()
        value = evaluate(sim.traffic, parsed, now) if sim is not None else None
        result: list[dict[str, Any]] = []
        if value is not None:
            result.append({"metric": {}, "value": [round(now, 3), format_value(value)]})
        return JSONResponse({"status": "success",
                             "data": {"resultType": "vector", "result": result}})

    async def ready(self, _: Request) -> Response:
        return Response("Prometheus Server is Ready.\n", media_type="text/plain")

    async def buildinfo(self, _: Request) -> Response:
        return JSONResponse({"status": "success", "data": {"version": "sandbox",
                                                           "revision": "kepler"}})


def create_app(world: World) -> Starlette:
    return Starlette(routes=PrometheusApi(world).routes())
