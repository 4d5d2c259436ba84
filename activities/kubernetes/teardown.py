"""The Kubernetes verbs of a decommission: record the footprint, scale to zero and back,
and delete what Kepler manages for a service (its Istio objects too). Removing and
restoring the routes is istio.py's. Every verb is idempotent: deleting what is gone and
scaling what is already scaled are no-ops."""

from __future__ import annotations

from temporalio import activity

from activities.kubernetes.client import Cluster, ClusterActivities
from kepler import naming
from kepler.decommission import EnvTarget, Footprint, TeardownRequest, TeardownResult

ISTIO_KINDS = ["VirtualService", "Gateway", "DestinationRule"]
# Deleted in this order; the Namespace last, and only when nothing else lives in it
# and the platform opted in (decommission.delete_namespaces).
KUBERNETES_KINDS = ["HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob", "Deployment",
                    "Service", "ConfigMap", "ServiceAccount"]
BUILTIN = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
# What may live in a namespace; any one of these (not Kubernetes' own, not owned by
# another object) keeps the namespace: a PersistentVolumeClaim is never deleted.
OCCUPANTS = [*ISTIO_KINDS, *KUBERNETES_KINDS, "Job", "Pod", "ReplicaSet",
             "PersistentVolumeClaim", "Secret"]
MANAGED = ",".join(f"{k}={v}" for k, v in naming.MANAGED_BY.items())


def created_by_kepler(obj: dict) -> bool:
    """Kepler marks what it creates when it creates it; a label alone proves nothing."""
    return naming.CREATED_BY_RUN in (obj["metadata"].get("annotations") or {})


def selector(service: str) -> str:
    return f"app={service},{MANAGED}"


def clean(obj: dict) -> dict:
    """A manifest that can be created again: no server-set fields."""
    meta = obj.get("metadata", {})
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)}
    return {"apiVersion": obj.get("apiVersion", "networking.istio.io/v1"), "kind": obj["kind"],
            "metadata": keep, "spec": obj.get("spec", {})}


class TeardownActivities(ClusterActivities):
    @activity.defn(name="kubernetes.record_footprint")
    def record_footprint(self, target: EnvTarget) -> Footprint:
        """Read-only: the service's routes and replica counts in one environment."""
        cluster = self.clusters(target.env)
        ns, sel = target.namespace, selector(target.service)
        routes = [clean({**vs, "kind": "VirtualService"})
                  for vs in cluster.list("VirtualService", ns, sel)]
        replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 0)
                    for d in cluster.list("Deployment", ns, sel)}
        suspended = {c["metadata"]["name"]: bool(c["spec"].get("suspend"))
                     for c in cluster.list("CronJob", ns, sel)}
        return Footprint(target=target, virtual_services=routes, replicas=replicas,
                         suspended=suspended)

    @activity.defn(name="kubernetes.scale_down")
    def scale_down(self, footprint: Footprint) -> list[str]:
        """Deployments to 0 and CronJobs suspended: nothing of the service runs any more."""
        return self._scale(footprint, {name: 0 for name in footprint.replicas},
                           {name: True for name in footprint.suspended})

    @activity.defn(name="kubernetes.scale_restore")
    def scale_restore(self, footprint: Footprint) -> list[str]:
        return self._scale(footprint, footprint.replicas, footprint.suspended)

    def _scale(self, footprint: Footprint, want: dict[str, int],
               suspend: dict[str, bool]) -> list[str]:
        cluster = self.clusters(footprint.target.env)
        ns, changed = footprint.target.namespace, []
        for name, replicas in want.items():
            live = cluster.get("Deployment", ns, name)
            if live is None or live["spec"].get("replicas") == replicas:
                continue
            cluster.patch("Deployment", ns, name, {"spec": {"replicas": replicas}})
            changed.append(f"Deployment {ns}/{name} -> {replicas}")
        for name, suspended in suspend.items():
            live = cluster.get("CronJob", ns, name)
            if live is None or bool(live["spec"].get("suspend")) == suspended:
                continue
            cluster.patch("CronJob", ns, name, {"spec": {"suspend": suspended}})
            changed.append(f"CronJob {ns}/{name} -> {'suspended' if suspended else 'running'}")
        return changed

    @activity.defn(name="kubernetes.teardown")
    def teardown(self, req: TeardownRequest) -> TeardownResult:
        """Delete the service's Kepler-managed objects of one part (istio | kubernetes).
        The Namespace goes too only when Kepler made it, nothing else lives in it, and the
        platform opted in (`decommission.delete_namespaces`, which needs the opt-in role
        kepler-namespace-cleanup); a namespace kept is named in `kept`, with the reason."""
        cluster = self.clusters(req.target.env)
        ns, sel = req.target.namespace, selector(req.target.service)
        deleted = []
        for kind in ISTIO_KINDS if req.part == "istio" else KUBERNETES_KINDS:
            for obj in cluster.list(kind, ns, sel):  # rbac: ISTIO_KINDS, KUBERNETES_KINDS
                name = obj["metadata"]["name"]
                if not created_by_kepler(obj):
                    continue
                if cluster.delete(kind, ns, name):  # rbac: ISTIO_KINDS, KUBERNETES_KINDS
                    deleted.append(f"{kind} {ns}/{name}")
        if req.part != "kubernetes":
            return TeardownResult(deleted=deleted)
        live = cluster.get("Namespace", None, ns)
        if live is None:
            return TeardownResult(deleted=deleted)
        why = ("not created by Kepler" if not created_by_kepler(live)
               else "decommission.delete_namespaces is off" if not req.delete_namespace
               else self._occupant(cluster, ns))
        if why:
            return TeardownResult(deleted=deleted, kept=[f"Namespace {ns} kept ({why})"])
        if cluster.delete("Namespace", None, ns):  # rbac: namespace-cleanup
            deleted.append(f"Namespace {ns}")
        return TeardownResult(deleted=deleted)

    @staticmethod
    def _occupant(cluster: Cluster, ns: str) -> str:
        """What else lives in the namespace ('' when nothing): an object of any kind Kepler
        can list, but what Kubernetes puts in every namespace and what the deleted
        workloads leave behind for the garbage collector. Lists Secrets: only with the
        opt-in role."""
        for kind in OCCUPANTS:
            for obj in cluster.list(kind, ns):  # rbac: namespace-cleanup: OCCUPANTS
                meta = obj["metadata"]
                if (kind, meta["name"]) in BUILTIN or meta.get("ownerReferences") or \
                        meta.get("deletionTimestamp"):  # being deleted (a real foreground delete)
                    continue
                if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
                    continue
                return f"not empty: {kind} {meta['name']}"
        return ""

    @activity.defn(name="kubernetes.inventory")
    def inventory(self, target: EnvTarget) -> list[str]:
        """Read-only: what Kepler still manages for the service in one environment."""
        cluster = self.clusters(target.env)
        ns, sel = target.namespace, selector(target.service)
        return [f"{kind} {ns}/{obj['metadata']['name']}"
                for kind in ISTIO_KINDS + KUBERNETES_KINDS
                for obj in cluster.list(kind, ns, sel)  # rbac: ISTIO_KINDS, KUBERNETES_KINDS
                if not obj["metadata"].get("deletionTimestamp")]  # already going
