"""Prometheus (`/api/v1/query` over httpx): the numbers that decide verify and canary."""

from __future__ import annotations

import math

import httpx
from temporalio import activity

from activities.http_clients import shared_httpx
from activities.errors import non_retryable, raise_for_status, retryable
from kepler.canary import AnalysisResult, CanaryAnalysis, MetricValue
from kepler.settings import Platform
from kepler.payloads import VerifyRelease, VerifyResult


def instant_query(url: str, promql: str, timeout: float = 15) -> float | None:
    """The single value of an instant query; None when there is no data."""
    try:
        response = shared_httpx().post(f"{url.rstrip('/')}/api/v1/query",
                                       data={"query": promql}, timeout=timeout)
    except httpx.TransportError as e:
        raise retryable(f"Prometheus unreachable: {type(e).__name__}") from None
    if response.status_code == 400:
        raise non_retryable("InvalidInput", f"Prometheus refused the query: "
                            f"{response.json().get('error', response.text)[:300]}")
    if response.status_code != 200:
        raise_for_status(response.status_code, "Prometheus query", response.text)
    result = response.json().get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


class PrometheusActivities:
    def __init__(self, platform: Platform) -> None:
        self.url = platform.prometheus.url if platform.prometheus else ""

    @activity.defn(name="prometheus.verify")
    def verify(self, req: VerifyRelease) -> VerifyResult:
        """After the bake time: is the released workload's success rate high enough?"""
        from kepler import promql

        if not self.url:
            return VerifyResult(verdict="skipped", detail="no Prometheus configured")
        query = promql.render("request-success-rate", namespace=req.namespace,
                              workload=req.workload, interval=req.window)
        value = instant_query(self.url, query)
        if value is None:
            return VerifyResult(verdict="no_data", detail="no traffic observed for "
                                f"{req.workload} in the last {req.window}")
        if value < req.min_success_rate:
            return VerifyResult(verdict="failed", detail=f"request success rate {value:.2f}% < "
                                f"{req.min_success_rate}%")
        return VerifyResult(verdict="passed", detail=f"request success rate {value:.2f}%")

    @activity.defn(name="prometheus.analyse")
    def analyse(self, req: CanaryAnalysis) -> AnalysisResult:
        """One canary analysis round: each check's value (None when there is no data).
        An unreachable or failing Prometheus is retryable; a refused query is not."""
        from kepler import promql

        if not self.url:
            raise non_retryable("InvalidInput", "no Prometheus configured: a canary needs one "
                                "(prometheus.url in kepler.yaml)")
        values = []
        for check in req.metrics:
            try:
                if check.query is None:
                    query = promql.render(check.name, req.namespace, promql.workload_regex(
                        req.workload), req.interval)
                else:
                    query = promql.render_custom(check.query, req.namespace, req.workload,
                                                 req.interval, req.service)
            except ValueError as e:
                raise non_retryable("InvalidInput", f"metric {check.name}: {e}") from None
            activity.heartbeat(check.name)
            values.append(MetricValue(name=check.name, value=instant_query(self.url, query),
                                      query=query))
        return AnalysisResult(values=values)
