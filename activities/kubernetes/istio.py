"""Istio routing (networking.istio.io/v1) through the official client: weights between
the stable and canary subsets, live traffic mirrored to the canary, and the `x-canary: always`
route for testers (canary, rollback); a service's VirtualServices taken away and put back
(decommission)."""

from __future__ import annotations

from temporalio import activity

from activities.authorization import authorize_image, refused
from activities.kubernetes.client import ClusterActivities, read_modify_write
from activities.kubernetes.release import DEPLOYMENT
from kepler import manifests, naming
from kepler.decommission import Footprint
from kepler.payloads import ReleaseTarget, RouteWeights
from kepler.previews import preview_route


def current_weights(vs: dict) -> tuple[int, int, bool]:
    stable = canary = 0
    header = False
    for route in vs.get("spec", {}).get("http", []):
        if preview_route(route):
            continue
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


def current_mirror(vs: dict) -> int:
    """% of the live route's requests copied to the canary (0: none)."""
    for route in vs.get("spec", {}).get("http", []):
        if not route.get("match") and route.get("mirror") and not preview_route(route):
            return int(round(float((route.get("mirrorPercentage") or {}).get("value", 100))))
    return 0


class IstioActivities(ClusterActivities):
    @activity.defn(name="istio.set_routes")
    def set_routes(self, req: RouteWeights) -> RouteWeights:
        """Set the VirtualService's weights; returns what they were (for undo). Traffic goes
        to the canary only when the run's authorization covers the image it runs."""
        if req.canary or req.canary_header or req.mirror:
            self._authorize_canary(req)
        previous = RouteWeights(**req.model_dump(exclude={"authorization"}))

        def change(vs: dict) -> bool:
            stable, canary, header = current_weights(vs)
            mirror = current_mirror(vs)
            previous.stable, previous.canary, previous.canary_header = stable, canary, header
            previous.mirror = mirror
            if (stable, canary, header, mirror) == (req.stable, req.canary, req.canary_header, req.mirror):
                return False
            hosts = vs["spec"].get("hosts") or [req.service]
            gateways = vs["spec"].get("gateways")
            previews = [r for r in vs["spec"].get("http", []) if preview_route(r)]
            vs["spec"] = manifests.virtual_service_spec(req.service, req.stable, req.canary,
                                                        req.canary_header, req.mirror)
            vs["spec"]["http"][:0] = previews  # the previews' own routes stay as they are
            vs["spec"]["hosts"] = hosts
            if gateways:
                vs["spec"]["gateways"] = gateways
            return True

        read_modify_write(self.clusters(req.env), "VirtualService", req.namespace, req.service, change)
        return previous

    def _authorize_canary(self, req: RouteWeights) -> None:
        target = ReleaseTarget(env=req.env, namespace=req.namespace, service=req.service,
                               deployment=naming.canary_name(req.service))
        if req.authorization is None:
            raise refused(f"no authorization to send traffic to {target.name()} in {req.env}")
        if not self.platform.environments[req.env].approval.required:
            return  # any image may take traffic where none needs approval
        canary = self.clusters(req.env).get("Deployment", req.namespace, target.name())
        if canary is None:
            raise refused(f"no {target.name()} in {req.namespace} to send traffic to")
        annotations = canary["metadata"].get("annotations") or {}
        authorize_image(self.platform, target, DEPLOYMENT.container(canary).get("image", ""),
                        annotations.get(naming.COMMIT, ""), req.authorization, [])

    @activity.defn(name="istio.remove_routes")
    def remove_routes(self, footprint: Footprint) -> list[str]:
        cluster = self.clusters(footprint.target.env)
        ns = footprint.target.namespace
        return [f"VirtualService {ns}/{vs['metadata']['name']}"
                for vs in footprint.virtual_services
                if cluster.delete("VirtualService", ns, vs["metadata"]["name"])]

    @activity.defn(name="istio.restore_routes")
    def restore_routes(self, footprint: Footprint) -> list[str]:
        cluster = self.clusters(footprint.target.env)
        ns, restored = footprint.target.namespace, []
        for vs in footprint.virtual_services:
            live = cluster.get("VirtualService", ns, vs["metadata"]["name"])
            if live is None:
                cluster.create({**vs, "metadata": {**vs["metadata"],  # rbac: VirtualService
                                                   "namespace": ns}})
                restored.append(f"VirtualService {ns}/{vs['metadata']['name']}")
            elif live.get("spec") != vs["spec"]:
                cluster.patch("VirtualService", ns, vs["metadata"]["name"], {"spec": vs["spec"]})
                restored.append(f"VirtualService {ns}/{vs['metadata']['name']}")
        return restored
