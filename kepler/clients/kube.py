"""The Kubernetes API client of an environment's cluster, as kepler.yaml configures it:
a server URL (with a bearer token read from the named environment variable), or a
kubeconfig context; one per environment, made once. Shared by the worker's activities
(activities/kubernetes/client.py adds the verbs they use) and the CLI (`kepler logs`)."""

from __future__ import annotations

import os
import threading

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from kepler.retry import transient_retry
from kepler.settings import ClusterConfig, Platform


class ClusterConfigError(ValueError):
    """A cluster that cannot be configured (unknown environment, token not set): no retry
    fixes it. `kind` is the error type the activities report it as."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def cluster_of(platform: Platform, env: str) -> ClusterConfig:
    config = platform.environments.get(env)
    if config is None:
        raise ClusterConfigError("InvalidInput", f"env: unknown environment {env!r}")
    return config.cluster


def api_client(cluster: ClusterConfig) -> k8s.ApiClient:
    """A new ApiClient for one cluster; transient failures are retried per call."""
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
            raise ClusterConfigError("Unauthorized", f"{cluster.token_env} is not set in the "
                                     "worker's environment")
        conf.api_key = {"authorization": token}
        conf.api_key_prefix = {"authorization": "Bearer"}
    return k8s.ApiClient(conf)


class Connection:
    """One cluster's ApiClient."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api


class Clusters:
    """A Connection per environment, made once (per worker, per CLI command). A subclass
    may make something richer of each ApiClient (`connection`)."""
    connection: type[Connection] = Connection

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def __call__(self, env: str) -> Connection:
        with self._lock:
            if env not in self._connections:
                self._connections[env] = self.connection(api_client(cluster_of(self.platform, env)))
            return self._connections[env]


def read_deployment(api: k8s.ApiClient, namespace: str, name: str,
                    timeout: float | None = None) -> dict | None:
    """A Deployment as the API serves it (JSON field names), or None when there is none;
    `timeout`: seconds per request (None: the client's default, no limit)."""
    from kubernetes.client.rest import ApiException

    try:
        deploy = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace,
                                                               _request_timeout=timeout)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return api.sanitize_for_serialization(deploy)
