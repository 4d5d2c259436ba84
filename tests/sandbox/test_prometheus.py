"""Traffic metrics, the built-in PromQL, the Prometheus stand-in, and the real
Prometheus (Debian's) scraping the sandbox and agreeing with the stand-in."""

from __future__ import annotations

import math
from typing import Any, Iterator

import httpx
import pytest
from kubernetes import client

from kepler import promql
from sandbox.prometheus import queries
from sandbox.serve import Sandbox
from tests.helpers import real_prometheus, wait_until
from tests.sandbox.test_kubernetes import box, deployment, kube, ns, push  # noqa: F401
from tests.sandbox.test_kubernetes_rollout import rolled_out

ISTIO = "networking.istio.io"


# -- kepler/promql.py -------------------------------------------------------------------------

def test_render_builtin_queries() -> None:
    q = promql.render(promql.REQUEST_SUCCESS_RATE, "shop", promql.workload_regex("cart"), "1m")
    assert q == (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace='
        '"shop",destination_workload=~"cart",response_code!~"5.*"}[1m])) / sum(rate('
        'istio_requests_total{reporter="destination",destination_workload_namespace="shop",'
        'destination_workload=~"cart"}[1m])) * 100')
    q = promql.render(promql.REQUEST_DURATION, "shop", "cart-canary", "30s")
    assert q == (
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter='
        '"destination",destination_workload_namespace="shop",destination_workload=~"cart-canary"'
        '}[30s])) by (le))')
    assert promql.workload_regex("cart", "cart-canary") == "cart|cart-canary"
    for bad in (("x", "Shop", "a", "1m"), ("request-success-rate", "shop", 'a"', "1m"),
                ("request-success-rate", "shop", "a", "1 minute")):
        with pytest.raises(ValueError):
            promql.render(*bad)


def test_parse_builtin_recognises_only_renderings() -> None:
    q = promql.render(promql.REQUEST_DURATION, "shop", "cart|cart-canary", "2m")
    parsed = queries.parse_builtin(q)  # the stand-in's reading of Kepler's rendering
    assert parsed == queries.BuiltinQuery(promql.REQUEST_DURATION, "shop", "cart|cart-canary", "2m")
    assert parsed.seconds == 120
    assert queries.parse_builtin("  " + q.replace(", sum", ",sum") + "\n") == parsed
    assert queries.parse_builtin("up") is None
    mixed = promql.render(promql.REQUEST_SUCCESS_RATE, "a", "x", "1m").replace(
        'namespace="a",destination_workload=~"x"}[1m])) *', 'namespace="b",destination_workload=~"x"}[1m])) *')
    assert queries.parse_builtin(mixed) is None


# -- a canary in the simulated mesh -------------------------------------------------------------

def start_canary(box: Sandbox, kube: client.ApiClient, ns: str, stable_weight: int = 50) -> None:
    """Kepler's conventions: Deployments svc and svc-canary, Service svc, DR and VS svc."""
    stable = push(box, "team/svc", "v1", {"io.kepler.sandbox.latency-ms": "100"})
    canary = push(box, "team/svc", "v2", {"io.kepler.sandbox.error-rate": "0.2",
                                          "io.kepler.sandbox.latency-ms": "800"})
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    apps.create_namespaced_deployment(ns, deployment("svc", stable, replicas=2, app="svc"))
    apps.create_namespaced_deployment(ns, deployment("svc-canary", canary, replicas=1,
                                                     version="canary", app="svc"))
    core.create_namespaced_service(ns, {"metadata": {"name": "svc"}, "spec": {
        "selector": {"app": "svc"}, "ports": [{"name": "http", "port": 80,
                                                "targetPort": 8080}]}})
    custom = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(ISTIO, "v1", ns, "destinationrules", {
        "apiVersion": f"{ISTIO}/v1", "kind": "DestinationRule", "metadata": {"name": "svc"},
        "spec": {"host": "svc", "subsets": [{"name": "stable", "labels": {"version": "stable"}},
                                            {"name": "canary", "labels": {"version": "canary"}}]}})
    custom.create_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", {
        "apiVersion": f"{ISTIO}/v1", "kind": "VirtualService", "metadata": {"name": "svc"},
        "spec": {"hosts": ["svc"], "http": [
            {"match": [{"headers": {"x-canary": {"exact": "always"}}}],
             "route": [{"destination": {"host": "svc", "subset": "canary"}}]},
            {"route": [{"destination": {"host": "svc", "subset": "stable"},
                        "weight": stable_weight},
                       {"destination": {"host": "svc", "subset": "canary"},
                        "weight": 100 - stable_weight}]}]}})
    wait_until(lambda: rolled_out(apps, ns, "svc") and rolled_out(apps, ns, "svc-canary"),
               what="both versions ready")


def query(url: str, q: str, post: bool = False) -> dict[str, Any]:
    if post:
        r = httpx.post(f"{url}/api/v1/query", data={"query": q}, timeout=10)
    else:
        r = httpx.get(f"{url}/api/v1/query", params={"query": q}, timeout=10)
    return r.json()


def scalar(url: str, q: str, post: bool = False) -> float | None:
    body = query(url, q, post)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def metric_lines(box: Sandbox, ns: str) -> list[str]:
    text = httpx.get(f"{box.urls['kubernetes']}/metrics").text
    return [line for line in text.splitlines() if f'destination_workload_namespace="{ns}"' in line]


def test_metrics_follow_weights_and_labels(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    start_canary(box, kube, ns, stable_weight=75)

    def totals() -> dict[tuple[str, str], float]:
        counts: dict[tuple[str, str], float] = {}
        for line in metric_lines(box, ns):
            if line.startswith("istio_requests_total{"):
                workload = line.split('destination_workload="')[1].split('"')[0]
                code = line.split('response_code="')[1].split('"')[0]
                counts[(workload, code)] = counts.get((workload, code), 0) + float(
                    line.rsplit(" ", 1)[1])
        return counts

    # Compare increases after both versions are ready (before, one may have served alone).
    before = wait_until(lambda: totals().get(("svc-canary", "200")) and totals(),
                        what="canary series")
    after = wait_until(lambda: (t := totals())[("svc-canary", "200")] >
                       before[("svc-canary", "200")] + 20 and t, what="more canary traffic")
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta[("svc", "500")] == 0 and delta[("svc", "200")] > 0
    canary = delta[("svc-canary", "200")] + delta[("svc-canary", "500")]
    assert delta[("svc-canary", "500")] / canary == pytest.approx(0.2)
    # 75/25 weights: three times as many requests reach stable as canary.
    assert delta[("svc", "200")] / canary == pytest.approx(3, rel=0.02)
    sample = next(line for line in metric_lines(box, ns)
                  if "svc-canary" in line and "_bucket" in line)
    for label in ('reporter="destination"', 'destination_version="canary"',
                  'destination_service_name="svc"', 'destination_workload="svc-canary"', 'le="'):
        assert label in sample


def test_a_mirror_copies_live_requests_to_the_canary(box: Sandbox, kube: client.ApiClient,
                                                    ns: str) -> None:
    """Istio's `mirror` with `mirrorPercentage`: every live request is still served by stable;
    the canary serves copies of that share of them, and its metrics (its own errors) show it."""
    start_canary(box, kube, ns, stable_weight=100)
    custom = client.CustomObjectsApi(kube)
    vs = custom.get_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", "svc")
    vs["spec"]["http"][1].update(mirror={"host": "svc", "subset": "canary"},
                                 mirrorPercentage={"value": 50.0})
    custom.replace_namespaced_custom_object(ISTIO, "v1", ns, "virtualservices", "svc", vs)

    def served() -> dict[str, dict[str, float]]:
        """Requests by workload and code, from one scrape (both at the same instant)."""
        codes: dict[str, dict[str, float]] = {"svc": {}, "svc-canary": {}}
        for line in metric_lines(box, ns):
            if line.startswith("istio_requests_total{"):
                workload = line.split('destination_workload="')[1].split('"')[0]
                code = line.split('response_code="')[1].split('"')[0]
                codes[workload][code] = codes[workload].get(code, 0) + float(line.rsplit(" ", 1)[1])
        return codes

    before = served()
    after = wait_until(lambda: (a := served())["svc-canary"].get("200", 0)
                       > before["svc-canary"].get("200", 0) + 20 and a, what="mirrored requests")
    stable = sum(after["svc"].values()) - sum(before["svc"].values())
    canary_500 = after["svc-canary"].get("500", 0) - before["svc-canary"].get("500", 0)
    canary = sum(after["svc-canary"].values()) - sum(before["svc-canary"].values())
    assert after["svc"].get("500", 0) == before["svc"].get("500", 0)  # live answers: stable's
    assert canary / stable == pytest.approx(0.5, rel=0.02)  # half the live requests, copied
    assert canary_500 / canary == pytest.approx(0.2)  # the canary's own behaviour under them


def test_standin_answers_builtin_queries(box: Sandbox, kube: client.ApiClient, ns: str) -> None:
    start_canary(box, kube, ns)
    url = box.urls["prometheus"]
    rate = promql.render(promql.REQUEST_SUCCESS_RATE, ns, "svc-canary", "30s")
    p99 = promql.render(promql.REQUEST_DURATION, ns, "svc-canary", "30s")
    assert wait_until(lambda: scalar(url, rate), what="canary success rate") == pytest.approx(80)
    assert scalar(url, p99, post=True) == pytest.approx(800, rel=0.01)
    stable_rate = promql.render(promql.REQUEST_SUCCESS_RATE, ns, "svc", "30s")
    assert wait_until(lambda: scalar(url, stable_rate), what="stable") == pytest.approx(100)
    both = promql.render(promql.REQUEST_SUCCESS_RATE, ns, "svc|svc-canary", "30s")
    assert 85 < scalar(url, both) < 95  # half the traffic at 80 %, half at 100 %
    assert scalar(url, promql.render(promql.REQUEST_SUCCESS_RATE, "nowhere", "svc", "1m")) is None
    bad = httpx.get(f"{url}/api/v1/query", params={"query": "up"})
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"
    assert "needs a real Prometheus" in bad.json()["error"]


# -- the real Prometheus ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prometheus(box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with real_prometheus(box.urls["kubernetes"].removeprefix("http://"),
                         tmp_path_factory.mktemp("prometheus")) as url:
        yield url


def test_real_prometheus_agrees_with_standin(box: Sandbox, kube: client.ApiClient, ns: str,
                                             prometheus: str) -> None:
    start_canary(box, kube, ns)
    standin = box.urls["prometheus"]
    for workload, success, p99 in (("svc", 100, 100), ("svc-canary", 80, 800)):
        rate_q = promql.render(promql.REQUEST_SUCCESS_RATE, ns, workload, "30s")
        p99_q = promql.render(promql.REQUEST_DURATION, ns, workload, "30s")
        real_rate = wait_until(lambda: scalar(prometheus, rate_q), timeout=30,
                               what=f"real prometheus success rate of {workload}")
        real_p99 = wait_until(lambda: scalar(prometheus, p99_q), timeout=30,
                              what=f"real prometheus p99 of {workload}")
        assert real_rate == pytest.approx(success, abs=0.5)
        assert real_p99 == pytest.approx(p99, rel=0.02)
        assert scalar(standin, rate_q) == pytest.approx(real_rate, abs=0.5)
        assert scalar(standin, p99_q) == pytest.approx(real_p99, rel=0.02)
    # The analysis thresholds split them: stable passes, canary fails both checks.
    assert not math.isnan(real_rate)
