"""One official-`kubernetes`-client ApiClient per environment's cluster, and generic
REST verbs over the kinds Kepler manages (core, apps, autoscaling, policy, Istio)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, NoReturn

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from activities.http_retry import ATTEMPTS, IDEMPOTENT, transient_retry
from activities.errors import non_retryable, raise_for_status, retryable
from kepler.settings import ClusterConfig, Platform

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

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


def fail(e: ApiException, what: str) -> NoReturn:
    raise_for_status(e.status, what, (e.body or b"").decode() if isinstance(e.body, bytes)
                     else str(e.body or e.reason))


class Cluster:
    """Generic verbs on one cluster. Objects are plain dicts."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

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


class Clusters:
    """An ApiClient per environment, made once per worker."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._clusters: dict[str, Cluster] = {}
        self._lock = threading.Lock()

    def __call__(self, env: str) -> Cluster:
        with self._lock:
            if env not in self._clusters:
                config = self.platform.environments.get(env)
                if config is None:
                    raise non_retryable("InvalidInput", f"env: unknown environment {env!r}")
                self._clusters[env] = Cluster(self._api_client(config.cluster))
            return self._clusters[env]

    @staticmethod
    def _api_client(cluster: ClusterConfig) -> k8s.ApiClient:
        if cluster.context:
            return k8s_config.new_client_from_config(config_file=cluster.kubeconfig,
                                                     context=cluster.context)
        conf = k8s.Configuration()
        conf.host = cluster.server
        conf.retries = transient_retry()
        conf.verify_ssl = cluster.verify_tls
        if cluster.token_env:
            token = os.environ.get(cluster.token_env)
            if not token:
                raise non_retryable("Unauthorized", f"{cluster.token_env} is not set in the "
                                    "worker's environment")
            conf.api_key = {"authorization": token}
            conf.api_key_prefix = {"authorization": "Bearer"}
        return k8s.ApiClient(conf)
