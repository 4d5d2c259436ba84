"""A merge request's preview on Kubernetes: its own namespace, created for it and marked
with the preview's workflow id (Temporal's word, from the activity's info, never the
payload's), and deleted whole when the preview ends. A namespace that exists without that
mark is someone else's: the preview refuses it and touches nothing in it."""

from __future__ import annotations

import copy

from temporalio import activity

from activities.errors import non_retryable
from activities.kubernetes.client import Cluster, ClusterActivities
from kepler import naming
from kepler.previews import PREVIEW_ANNOTATION, PreviewDeploy, PreviewTarget

PREVIEW_KINDS = ("ServiceAccount", "ConfigMap", "Deployment", "Service")


def _ours(namespace: dict | None, workflow_id: str) -> bool:
    annotations = (namespace or {}).get("metadata", {}).get("annotations") or {}
    return annotations.get(PREVIEW_ANNOTATION) == workflow_id and naming.CREATED_BY_RUN in annotations


class PreviewActivities(ClusterActivities):
    @activity.defn(name="kubernetes.deploy_preview")
    def deploy_preview(self, req: PreviewDeploy) -> int:
        """Create the preview's namespace if missing, then create or update each object in
        it; returns the Deployment's generation (to wait for its rollout)."""
        info = activity.info()
        cluster = self.clusters(req.target.env)
        ns = req.target.namespace
        live = cluster.get("Namespace", None, ns)
        if live is None:
            cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "labels": {**naming.MANAGED_BY, "app": req.target.service},
                "annotations": {naming.CREATED_BY_RUN: info.workflow_run_id,
                                PREVIEW_ANNOTATION: info.workflow_id}}})
        elif not _ours(live, info.workflow_id):
            raise non_retryable("Conflict", f"namespace {ns} exists and is not this preview's "
                                f"({info.workflow_id}): nothing was changed in it")
        generation = 0
        for manifest in req.manifests:
            obj = copy.deepcopy(manifest)
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind not in PREVIEW_KINDS or obj["metadata"].get("namespace") != ns:
                raise non_retryable("InvalidInput", f"a preview holds {', '.join(PREVIEW_KINDS)} "
                                    f"in {ns} only, not {kind} {name}")
            written = self._write(cluster, obj, ns, info.workflow_run_id)
            if kind == "Deployment":
                generation = written["metadata"].get("generation", 0)
        return generation

    @staticmethod
    def _write(cluster: Cluster, obj: dict, ns: str, run_id: str) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if cluster.get(kind, ns, name) is None:  # rbac: PREVIEW_KINDS
            obj["metadata"].setdefault("annotations", {})[naming.CREATED_BY_RUN] = run_id
            return cluster.create(obj)  # rbac: PREVIEW_KINDS
        patch = {k: obj[k] for k in ("spec", "data") if k in obj}
        patch["metadata"] = {"labels": obj["metadata"].get("labels", {})}
        return cluster.patch(kind, ns, name, patch)  # rbac: PREVIEW_KINDS

    @activity.defn(name="kubernetes.teardown_preview")
    def teardown_preview(self, target: PreviewTarget) -> str:
        """Delete the preview's namespace, and everything in it, when it is this preview's;
        what it says it did. Gone already: nothing to do."""
        info = activity.info()
        cluster = self.clusters(target.env)
        live = cluster.get("Namespace", None, target.namespace)
        if live is None or live["metadata"].get("deletionTimestamp"):
            return f"namespace {target.namespace} already gone"
        if not _ours(live, info.workflow_id):  # it never deployed there: nothing of its own
            return f"namespace {target.namespace} is not this preview's: left as it is"
        cluster.delete("Namespace", None, target.namespace)  # rbac: namespace-cleanup
        return f"namespace {target.namespace} deleted"
