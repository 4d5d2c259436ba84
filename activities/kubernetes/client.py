"""One official-`kubernetes`-client ApiClient per environment's cluster (made by
kepler/clients/kube.py), generic REST verbs over the kinds Kepler manages (core, apps, batch,
autoscaling, policy, Istio), and the read-modify-write every update goes through.

Every Kubernetes call of the activities goes through `Cluster`'s verbs: deploy/rbac.py
derives the worker's RBAC rules from them."""

from __future__ import annotations

import time
from typing import Any, Callable, NoReturn

import urllib3
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError

from activities.errors import non_retryable, raise_for_status, retryable
from kepler.clients import kube
from kepler.retry import ATTEMPTS, IDEMPOTENT
from kepler.settings import Platform

# kind -> (API prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "Pod": ("/api/v1", "pods", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "DestinationRule": ("/apis/networking.istio.io/v1", "destinationrules", True),
    "VirtualService": ("/apis/networking.istio.io/v1", "virtualservices", True),
    "Gateway": ("/apis/networking.istio.io/v1", "gateways", True),
}
# What kepler/manifests.py for_environment lays down (a cronjob service's CronJob, a
# Deployment service's objects and routes): the kinds `kubernetes.apply_objects` and its
# undo touch. deploy/rbac.py reads it (`# rbac: MANAGED_KINDS`); tests/test_deploy.py
# holds it to for_environment.
MANAGED_KINDS = ("Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget", "CronJob",
                 "DestinationRule", "Gateway", "VirtualService")

MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 5


def fail(e: ApiException, what: str) -> NoReturn:
    raise_for_status(e.status, what, (e.body or b"").decode() if isinstance(e.body, bytes)
                     else str(e.body or e.reason))


class Cluster(kube.Connection):
    """Generic verbs on one cluster. Objects are plain dicts."""

    def path(self, kind: str, namespace: str | None, name: str | None = None,
             subresource: str = "") -> str:
        if kind not in KINDS:
            raise non_retryable("InvalidInput", f"kind {kind!r} is not managed by Kepler")
        prefix, plural, namespaced = KINDS[kind]
        path = prefix + (f"/namespaces/{namespace}" if namespaced else "") + f"/{plural}"
        if name:
            path += f"/{name}" + (f"/{subresource}" if subresource else "")
        return path

    def call(self, method: str, path: str, body: Any = None, query: list | None = None,
             content_type: str = "application/json") -> Any:
        request = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [], body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"])
        attempts = ATTEMPTS if method in IDEMPOTENT else 1
        for attempt in range(attempts):
            try:
                return self.api._call_with_legacy_options(
                    request, {"200": "object", "201": "object", "202": "object"}, None, True, 15, True)
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
                # urllib3 retries what fails before the answer; a body cut off is seen here
                if attempt == attempts - 1:
                    raise retryable(f"{method} {path}: cluster unreachable: {type(e).__name__}") from None
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self.call("GET", self.path(kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            fail(e, f"get {kind} {namespace}/{name}")

    def list(self, kind: str, namespace: str | None, selector: str = "") -> list[dict]:
        query = [("labelSelector", selector)] if selector else []
        try:
            return self.call("GET", self.path(kind, namespace), query=query).get("items", [])
        except ApiException as e:
            fail(e, f"list {kind} in {namespace}")

    def create(self, obj: dict) -> dict:
        kind, meta = obj["kind"], obj["metadata"]
        try:
            return self.call("POST", self.path(kind, meta.get("namespace")), obj)
        except ApiException as e:
            fail(e, f"create {kind} {meta.get('namespace')}/{meta['name']}")

    def replace(self, obj: dict) -> dict:
        """PUT with the resourceVersion read earlier: a concurrent change gives 409, never a
        blind overwrite."""
        kind, meta = obj["kind"], obj["metadata"]
        try:
            return self.call("PUT", self.path(kind, meta.get("namespace"), meta["name"]), obj)
        except ApiException as e:
            fail(e, f"replace {kind} {meta.get('namespace')}/{meta['name']}")

    def patch(self, kind: str, namespace: str | None, name: str, patch: Any,
              content_type: str = MERGE_PATCH) -> dict:
        try:
            return self.call("PATCH", self.path(kind, namespace, name), patch,
                             content_type=content_type)
        except ApiException as e:
            fail(e, f"patch {kind} {namespace}/{name}")

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete, tolerating 404. True if something was deleted."""
        try:
            self.call("DELETE", self.path(kind, namespace, name),
                      {"propagationPolicy": "Foreground"})
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            fail(e, f"delete {kind} {namespace}/{name}")


class Clusters(kube.Clusters):
    """A Cluster per environment, made once per worker; a cluster that cannot be
    configured fails non-retryable."""
    connection = Cluster

    def __call__(self, env: str) -> Cluster:
        try:
            return super().__call__(env)  # type: ignore[return-value]
        except kube.ClusterConfigError as e:
            raise non_retryable(e.kind, str(e)) from None


class ClusterActivities:
    """Base of the Kubernetes activity classes: the worker's clusters."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.clusters = Clusters(platform)


def read_modify_write(cluster: Cluster, kind: str, namespace: str, name: str,
                      change: Callable[[dict], bool], live: dict | None = None) -> dict:
    """Apply `change` to the live object (`live`, when the caller has just read it) and
    write it back with the resourceVersion read; retry on 409 with a fresh read, so a
    concurrent change is never blindly overwritten. `change` returns False when the
    object already matches: then nothing is written."""
    for attempt in range(CONFLICT_RETRIES):
        obj = live if attempt == 0 and live is not None else cluster.get(kind, namespace, name)
        if obj is None:
            raise non_retryable("NotFound", f"{kind} {namespace}/{name} does not exist: "
                                "create the service first (kepler service create)")
        if not change(obj):
            return obj
        try:
            return cluster.replace(obj)
        except ApplicationError as e:
            if e.type != "Conflict409":
                raise
    raise ApplicationError(f"{kind} {namespace}/{name} kept changing under us (409 x{CONFLICT_RETRIES})",
                           type="Conflict409")
