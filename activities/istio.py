"""Istio routing (networking.istio.io/v1) through the official client: weights between
the stable and canary subsets, and the `x-canary: always` route for testers."""

from __future__ import annotations

from temporalio import activity

from activities.k8s_client import Clusters
from activities.kubernetes import read_modify_write
from kepler import manifests
from kepler.settings import Platform
from kepler.steps import RouteWeights


def current_weights(vs: dict) -> tuple[int, int, bool]:
    stable = canary = 0
    header = False
    for route in vs.get("spec", {}).get("http", []):
        if route.get("match"):
            header = True
            continue
        for dest in route.get("route", []):
            subset = dest.get("destination", {}).get("subset")
            if subset == "stable":
                stable = dest.get("weight", 0)
            elif subset == "canary":
                canary = dest.get("weight", 0)
    return stable, canary, header


class IstioActivities:
    def __init__(self, platform: Platform) -> None:
        self.clusters = Clusters(platform)

    @activity.defn(name="istio.set_routes")
    def set_routes(self, req: RouteWeights) -> RouteWeights:
        """Set the VirtualService's weights; returns what they were (for undo)."""
        previous = RouteWeights(**req.model_dump())

        def change(vs: dict) -> bool:
            stable, canary, header = current_weights(vs)
            previous.stable, previous.canary, previous.canary_header = stable, canary, header
            if (stable, canary, header) == (req.stable, req.canary, req.canary_header):
                return False
            hosts = vs["spec"].get("hosts") or [req.service]
            gateways = vs["spec"].get("gateways")
            vs["spec"] = manifests.virtual_service_spec(req.service, req.stable, req.canary,
                                                        req.canary_header)
            vs["spec"]["hosts"] = hosts
            if gateways:
                vs["spec"]["gateways"] = gateways
            return True

        read_modify_write(self.clusters(req.env), "VirtualService", req.namespace, req.service, change)
        return previous
