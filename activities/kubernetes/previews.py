"""A merge request's preview on Kubernetes, in the worker's `previews.mode` (its
kepler.yaml, never the payload's):

- namespace: its own namespace, created for it and marked with the preview's workflow id
  (Temporal's word, from the activity's info), deleted whole when the preview ends. A
  namespace that exists without that mark is someone else's: refused, nothing touched.
- header: beside the service in its environment's namespace, every object named
  `<service>-mr-<iid>` (derived from the workflow id) and marked the same way, reached
  through its own route in the service's VirtualService (`x-preview: mr-<iid>`, before the
  live routes, which it never changes); teardown deletes exactly those objects and that route.
"""

from __future__ import annotations

import copy

from temporalio import activity

from activities.errors import non_retryable
from activities.kubernetes.client import Cluster, ClusterActivities, read_modify_write
from kepler import naming
from kepler.previews import (
    PREVIEW_ANNOTATION, PREVIEW_HEADER, PREVIEW_PREFIX, ROUTE_PREFIX, PreviewDeploy, PreviewTarget,
    preview_name,
)

PREVIEW_KINDS = ("ServiceAccount", "ConfigMap", "Deployment", "Service")


def _marked(obj: dict | None, workflow_id: str) -> bool:
    annotations = (obj or {}).get("metadata", {}).get("annotations") or {}
    return annotations.get(PREVIEW_ANNOTATION) == workflow_id and naming.CREATED_BY_RUN in annotations


def _route_name(mr: int) -> str:
    return f"{ROUTE_PREFIX}mr-{mr}"


class PreviewActivities(ClusterActivities):
    def _caller(self, target: PreviewTarget) -> str:
        """The calling preview's workflow id, which must be this target's."""
        workflow_id = activity.info().workflow_id
        if workflow_id != f"{PREVIEW_PREFIX}{target.service}/{target.mr}":
            raise non_retryable("Unauthorized", f"{workflow_id} is not the preview of "
                                f"{target.service} !{target.mr}")
        return workflow_id

    @activity.defn(name="kubernetes.deploy_preview")
    def deploy_preview(self, req: PreviewDeploy) -> int:
        """Create or update the preview's objects (and, in header mode, its route); returns
        the Deployment's generation (to wait for its rollout)."""
        t, me = req.target, self._caller(req.target)
        header = self.platform.previews.mode == "header"
        cluster = self.clusters(t.env)
        live = cluster.get("Namespace", None, t.namespace)
        if header and live is None:
            raise non_retryable("NotFound", f"namespace {t.namespace} does not exist: create "
                                f"{t.service} before previewing it")
        if not header and live is None:
            cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": t.namespace, "labels": {**naming.MANAGED_BY, "app": t.service},
                "annotations": {naming.CREATED_BY_RUN: activity.info().workflow_run_id,
                                PREVIEW_ANNOTATION: me}}})
        elif not header and not _marked(live, me):
            raise non_retryable("Conflict", f"namespace {t.namespace} exists and is not this "
                                f"preview's ({me}): nothing was changed in it")
        names = {preview_name(t.service, t.mr), f"{preview_name(t.service, t.mr)}-config"}
        generation = 0
        for manifest in req.manifests:
            obj = copy.deepcopy(manifest)
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind not in PREVIEW_KINDS or obj["metadata"].get("namespace") != t.namespace or (
                    header and name not in names):
                raise non_retryable("InvalidInput", f"a preview holds {', '.join(PREVIEW_KINDS)} "
                                    f"in {t.namespace}" + (f" named {sorted(names)}" if header else "")
                                    + f", not {kind} {name}")
            written = self._write(cluster, obj, t.namespace, me, header)
            if kind == "Deployment":
                generation = written["metadata"].get("generation", 0)
        if header:
            self._route(cluster, t, add=True)
        return generation

    @staticmethod
    def _write(cluster: Cluster, obj: dict, ns: str, me: str, header: bool) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = cluster.get(kind, ns, name)  # rbac: PREVIEW_KINDS
        if live is None:
            obj["metadata"].setdefault("annotations", {}).update({
                naming.CREATED_BY_RUN: activity.info().workflow_run_id, PREVIEW_ANNOTATION: me})
            return cluster.create(obj)  # rbac: PREVIEW_KINDS
        if header and not _marked(live, me):
            raise non_retryable("Conflict", f"{kind} {ns}/{name} exists and is not this "
                                f"preview's ({me}): nothing was changed")
        patch = {k: obj[k] for k in ("spec", "data") if k in obj}
        patch["metadata"] = {"labels": obj["metadata"].get("labels", {})}
        return cluster.patch(kind, ns, name, patch)  # rbac: PREVIEW_KINDS

    @staticmethod
    def _route(cluster: Cluster, t: PreviewTarget, add: bool) -> bool:
        """Put the preview's own route first in the service's VirtualService, or take it
        away; the other routes are left exactly as they are. False: no VirtualService."""
        route = {"name": _route_name(t.mr),
                 "match": [{"headers": {PREVIEW_HEADER: {"exact": f"mr-{t.mr}"}}}],
                 "route": [{"destination": {"host": preview_name(t.service, t.mr)}}]}

        def change(vs: dict) -> bool:
            http = vs["spec"].get("http", [])
            kept = [r for r in http if r.get("name") != route["name"]]
            wanted = [route, *kept] if add else kept
            if wanted == http:
                return False
            vs["spec"]["http"] = wanted
            return True

        live = cluster.get("VirtualService", t.namespace, t.service)
        if live is None:
            if add:
                raise non_retryable("NotFound", f"{t.service} has no VirtualService in "
                                    f"{t.namespace} (mesh: false?): no header route for a preview")
            return False
        read_modify_write(cluster, "VirtualService", t.namespace, t.service, change, live)
        return True

    @activity.defn(name="kubernetes.teardown_preview")
    def teardown_preview(self, target: PreviewTarget) -> str:
        """Delete what is this preview's, and only that; what it says it did."""
        me = self._caller(target)
        cluster = self.clusters(target.env)
        if self.platform.previews.mode == "header":
            done = ["its route removed"] if self._route(cluster, target, add=False) else []
            name = preview_name(target.service, target.mr)
            for kind in PREVIEW_KINDS:
                obj_name = f"{name}-config" if kind == "ConfigMap" else name
                live = cluster.get(kind, target.namespace, obj_name)  # rbac: PREVIEW_KINDS
                if _marked(live, me) and cluster.delete(kind, target.namespace, obj_name):  # rbac: PREVIEW_KINDS
                    done.append(f"{kind} {obj_name} deleted")
            return "; ".join(done) or "nothing of it left"
        live = cluster.get("Namespace", None, target.namespace)
        if live is None or live["metadata"].get("deletionTimestamp"):
            return f"namespace {target.namespace} already gone"
        if not _marked(live, me):  # it never deployed there: nothing of its own
            return f"namespace {target.namespace} is not this preview's: left as it is"
        cluster.delete("Namespace", None, target.namespace)  # rbac: namespace-cleanup
        return f"namespace {target.namespace} deleted"
