"""Simulated request traffic and the Istio-style metrics it produces.

Every k8s Service with a selector receives `traffic_rps` requests per second. The
Service's VirtualService (route weights to DestinationRule subsets) splits them;
without one they split by ready pods. Only ready pods serve. Each workload's image
labels give its error rate and latency. Counters grow by their *expected* values
(no noise), so a 20 % error-rate version shows 80 % success exactly.

Latency for a typical latency L is shaped around the histogram buckets so that
Prometheus' histogram_quantile(0.99, ...) answers exactly L: a share f of requests
falls in the bucket below L's bucket, the rest in L's bucket, with f chosen so the
linear interpolation inside L's bucket lands on L (see `latency_shape`).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox.kubernetes.images import behaviour
from sandbox.kubernetes.pods import PODS, REPLICASETS, Kubelet
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.select import matches, parse_label_selector
from sandbox.kubernetes.store import Store

SERVICES = resource_for_kind("Service")
VIRTUAL_SERVICES = resource_for_kind("VirtualService")
DESTINATION_RULES = resource_for_kind("DestinationRule")
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
           300000, 600000, 1800000, 3600000)
SAMPLE_EVERY_S = 1.0
KEEP_SAMPLES = 1800
# What flows are derived from (besides the pods' simulated state, which a pod write shows).
INPUT_KINDS = {r.kind for r in (SERVICES, PODS, REPLICASETS, VIRTUAL_SERVICES,
                                 DESTINATION_RULES)}

SeriesKey = tuple[str, str, str, str]  # namespace, workload, version, service


def latency_shape(latency_ms: float) -> tuple[list[float], float]:
    """(cumulative share of requests at each bucket bound, mean latency) for p99 = latency."""
    q = 0.99
    target = min(max(latency_ms, 1.0), BUCKETS[-1] * 0.99)
    i = next(n for n, le in enumerate(BUCKETS) if le > target)
    upper = BUCKETS[i]
    lower = BUCKETS[i - 1] if i > 0 else 0.0
    below = BUCKETS[i - 2] if i > 1 else 0.0
    # Interpolation in (lower, upper] gives lower + (upper-lower)*(q-f)/(1-f) = target.
    f = (q * (upper - lower) - (target - lower)) / (upper - target)
    f = min(max(f, 0.0), q)
    cdf = [0.0 if le <= below else f if le <= lower else 1.0 for le in BUCKETS]
    mean = f * (below + lower) / 2 + (1 - f) * (lower + upper) / 2
    return cdf, mean


_shape = functools.lru_cache(maxsize=1024)(latency_shape)


@dataclass
class Flow:
    key: SeriesKey
    share: float  # fraction of the service's requests
    error_rate: float
    latency_ms: float


@dataclass
class Series:
    ok: float = 0.0
    errors: float = 0.0
    buckets: list[float] | None = None
    sum_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.buckets is None:
            self.buckets = [0.0] * len(BUCKETS)

    @property
    def count(self) -> float:
        return self.ok + self.errors

    def copy(self) -> "Series":
        return Series(self.ok, self.errors, list(self.buckets or []), self.sum_ms)


class Traffic:
    def __init__(self, store: Store, kubelet: Kubelet, rps: float) -> None:
        self.store = store
        self.kubelet = kubelet
        self.rps = rps
        self.series: dict[SeriesKey, Series] = {}
        self.last = time.time()
        self.samples: deque[tuple[float, dict[SeriesKey, Series]]] = deque(maxlen=KEEP_SAMPLES)
        # Flows only change with a write to what they are derived from, in their namespace.
        self._by_service: dict[str, list[Flow]] = {}  # by Service namespace/name
        self._derived: list[Flow] = []  # what `flows` answered last
        self._flows: list[Flow] = []  # what serves since the last advance
        self._stale: set[str] | None = None  # namespaces to derive again; None: all
        self._owed = 0.0  # seconds of traffic at `_flows` not yet added to `series`
        store.on_write.append(self._written)

    def _written(self, res: Any, obj: dict[str, Any], _: dict[str, Any] | None) -> None:
        if res.kind in INPUT_KINDS and self._stale is not None:
            self._stale.add(obj["metadata"].get("namespace", ""))

    def advance(self, now: float | None = None, *, settle: bool = True) -> None:
        """Add the requests served up to `now` to `series` (and take a sample every
        SAMPLE_EVERY_S). With `settle=False` (the simulation's tick), what steady flows
        serve is added only when they change, a sample is due or a reader settles."""
        now = time.time() if now is None else now
        dt = now - self.last
        if dt <= 0:
            return
        self.last = now
        flows = self.flows()
        if flows != self._flows:  # they serve since the previous advance
            self._add(self._flows, self._owed)
            self._flows, self._owed = flows, 0.0
        self._owed += dt
        sample = not self.samples or now - self.samples[-1][0] >= SAMPLE_EVERY_S
        if settle or sample:
            self._add(self._flows, self._owed)
            self._owed = 0.0
        if sample:
            self.samples.append((now, {k: v.copy() for k, v in self.series.items()}))

    def _add(self, flows: list[Flow], dt: float) -> None:
        for flow in flows:
            n = self.rps * dt * flow.share
            s = self.series.setdefault(flow.key, Series())
            s.errors += n * flow.error_rate
            s.ok += n * (1 - flow.error_rate)
            cdf, mean = _shape(flow.latency_ms)
            for i, share in enumerate(cdf):
                assert s.buckets is not None
                s.buckets[i] += n * share
            s.sum_ms += n * mean

    # -- who serves what ------------------------------------------------------------

    def _workload(self, pod: dict[str, Any]) -> str:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                rs = self.store.find(REPLICASETS, pod["metadata"]["namespace"], ref["name"])
                for owner in (rs or {}).get("metadata", {}).get("ownerReferences") or []:
                    if owner.get("kind") == "Deployment":
                        return str(owner["name"])
                return str(ref["name"])
        return str(pod["metadata"]["name"])

    def flows(self) -> list[Flow]:
        """Every Service's flows, in Service order (derived again only for the namespaces
        written to since the last call)."""
        stale = self._stale
        if stale is not None and not stale:
            return self._derived
        by_service: dict[str, list[Flow]] = {}
        for svc in self.store.iter(SERVICES):
            meta = svc["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            cached = (self._by_service.get(key)
                      if stale is not None and meta["namespace"] not in stale else None)
            by_service[key] = cached if cached is not None else self._flows_of(svc)
        self._by_service, self._stale = by_service, set()
        self._derived = [f for flows in by_service.values() for f in flows]
        return self._derived

    def _flows_of(self, svc: dict[str, Any]) -> list[Flow]:
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return []
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        reqs = parse_label_selector(",".join(f"{k}={v}" for k, v in selector.items()))
        pods = [p for p in self.store.iter(PODS, ns)
                if matches(reqs, p["metadata"].get("labels")) and self.kubelet.is_ready(p)]
        if not pods:
            return []
        flows: list[Flow] = []
        mirror = self._mirror(ns, name)  # copies of live requests: served, answers discarded
        for subset_labels, weight in self._weights(ns, name) + ([mirror] if mirror else []):
            chosen = [p for p in pods if all((p["metadata"].get("labels") or {}).get(k) == v
                                             for k, v in subset_labels.items())]
            for pod in chosen:
                labels = self.store.sim["pods"].get(pod["metadata"]["uid"], {}).get(
                    "labels", {})
                error_rate, latency = behaviour(labels)
                version = (pod["metadata"].get("labels") or {}).get("version", "unknown")
                flows.append(Flow((ns, self._workload(pod), version, name),
                                  weight / len(chosen), error_rate, latency))
        return flows

    def _weights(self, namespace: str, service: str) -> list[tuple[dict[str, str], float]]:
        """(subset pod labels, share of traffic) for a Service, from its VirtualService."""
        vs = self._virtual_service(namespace, service)
        if vs is None:
            return [({}, 1.0)]
        routes = (vs.get("spec") or {}).get("http") or []
        # The default route is the first one without a match (header routes are for testers).
        route = next((r for r in routes if not r.get("match")), routes[-1] if routes else None)
        destinations = (route or {}).get("route") or []
        if not destinations:
            return [({}, 1.0)]
        subsets = self._subsets(namespace, service)
        weights = [(d, float(d.get("weight", 100 if len(destinations) == 1 else 0)))
                   for d in destinations]
        total = sum(w for _, w in weights) or 1.0
        result = []
        for dest, w in weights:
            subset = (dest.get("destination") or {}).get("subset")
            labels = subsets.get(subset, {}) if subset else {}
            if w > 0 and (subset is None or subset in subsets):
                result.append((labels, w / total))
        return result

    def _mirror(self, namespace: str, service: str) -> tuple[dict[str, str], float] | None:
        """(subset pod labels, share of the live requests copied to it) of the default route's
        `mirror`, as Istio sends it: `mirrorPercentage` of the requests (100 when absent)."""
        vs = self._virtual_service(namespace, service)
        routes = ((vs or {}).get("spec") or {}).get("http") or []
        route = next((r for r in routes if not r.get("match")), None)
        target = (route or {}).get("mirror")
        if not target:
            return None
        subset = target.get("subset")
        subsets = self._subsets(namespace, service)
        if subset is not None and subset not in subsets:
            return None
        share = float((route.get("mirrorPercentage") or {}).get("value", 100.0)) / 100
        return (subsets.get(subset, {}) if subset else {}), share

    def _virtual_service(self, namespace: str, service: str) -> dict[str, Any] | None:
        names = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                 f"{service}.{namespace}.svc.cluster.local"}
        for vs in self.store.iter(VIRTUAL_SERVICES, namespace):
            if names & set((vs.get("spec") or {}).get("hosts") or []):
                return vs
        return None

    def _subsets(self, namespace: str, service: str) -> dict[str, dict[str, str]]:
        names = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
                 f"{service}.{namespace}.svc.cluster.local"}
        for dr in self.store.iter(DESTINATION_RULES, namespace):
            spec = dr.get("spec") or {}
            if spec.get("host") in names:
                return {s["name"]: s.get("labels") or {} for s in spec.get("subsets") or []
                        if s.get("name")}
        return {}

    # -- exposition ---------------------------------------------------------------------

    def render(self) -> str:
        self.advance()
        lines = ["# HELP istio_requests_total Requests served, by destination and code.",
                 "# TYPE istio_requests_total counter"]
        for key, s in sorted(self.series.items()):
            for code, value in (("200", s.ok), ("500", s.errors)):
                lines.append(f"istio_requests_total{{{_labels(key)},response_code=\"{code}\"}} "
                             f"{value:.6f}")
        lines += ["# HELP istio_request_duration_milliseconds Request duration.",
                  "# TYPE istio_request_duration_milliseconds histogram"]
        for key, s in sorted(self.series.items()):
            base = _labels(key)
            for le, value in zip(BUCKETS, s.buckets or []):
                lines.append(f'istio_request_duration_milliseconds_bucket{{{base},le="{le}"}} '
                             f"{value:.6f}")
            lines.append(f'istio_request_duration_milliseconds_bucket{{{base},le="+Inf"}} '
                         f"{s.count:.6f}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{base}}} {s.sum_ms:.6f}")
            lines.append(f"istio_request_duration_milliseconds_count{{{base}}} {s.count:.6f}")
        return "\n".join(lines) + "\n"


def _labels(key: SeriesKey) -> str:
    ns, workload, version, service = key
    return (f'reporter="destination",destination_workload="{workload}",'
            f'destination_workload_namespace="{ns}",destination_version="{version}",'
            f'destination_service_name="{service}"')
