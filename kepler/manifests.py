"""The Kubernetes and Istio objects Kepler manages, as plain manifests (pure functions)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kepler import naming
from kepler.spec import Resources, ServiceSpec
from kepler.payloads import PodShape
from kepler.workloads import CONFIG_MOUNT, Volume

PLACEHOLDER_IMAGE = "kepler/placeholder:none"  # the Deployment before its first release
ISTIO = "networking.istio.io/v1"


def _meta(name: str, namespace: str | None, service: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": service, **naming.MANAGED_BY}}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def config_hash(config: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def resources_block(r: Resources) -> dict[str, Any]:
    return {"requests": {"cpu": r.cpu_request, "memory": r.memory_request},
            "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit}}


def volume_blocks(volumes: list[Volume]) -> tuple[list[dict], list[dict]]:
    """(pod volumes, container volumeMounts) binding existing claims and ConfigMaps."""
    pod_volumes, mounts = [], []
    for i, v in enumerate(volumes):
        name = f"vol-{i}"
        pod_volumes.append({"name": name, **(
            {"persistentVolumeClaim": {"claimName": v.claim, "readOnly": v.read_only}}
            if v.claim else {"configMap": {"name": v.config_map}})})
        mounts.append({"name": name, "mountPath": v.mount_path, "readOnly": v.read_only})
    return pod_volumes, mounts


def pod_template(service: str, version: str, image: str, port: int, health_path: str,
                 env: dict[str, str], resources: Resources, annotations: dict[str, str],
                 volumes: list[Volume] | None = None, config_mount: str = CONFIG_MOUNT,
                 config_map: str = "") -> dict:
    """A service's pod; it mounts `config_map` (default: the service's ConfigMap)."""
    container = {
        "name": service, "image": image,
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "envFrom": [],
        "resources": resources_block(resources),
        "readinessProbe": {"httpGet": {"path": health_path, "port": port}},
        "volumeMounts": [{"name": "config", "mountPath": config_mount}],
    }
    extra_volumes, extra_mounts = volume_blocks(volumes or [])
    container["volumeMounts"] += extra_mounts
    return {
        "metadata": {"labels": naming.labels(service, version), "annotations": annotations},
        "spec": {
            "serviceAccountName": service,
            "containers": [container],
            "volumes": [{"name": "config", "configMap": {
                "name": config_map or naming.config_map_name(service), "optional": True}}]
            + extra_volumes,
        },
    }


def deployment(spec: ServiceSpec, env: str, namespace: str, name: str | None = None,
               version: str = "stable", image: str = PLACEHOLDER_IMAGE, replicas: int = 0) -> dict:
    name = name or spec.name
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, namespace, spec.name),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": spec.name, "version": version}},
            # a canary has its own ConfigMap: its new config is analysed before promotion
            # the config hash from the start, so that undoing a first release is exact
            "template": pod_template(spec.name, version, image, spec.port, spec.health_path,
                                     spec.env_in(env), spec.resources_in(env),
                                     {naming.CONFIG_HASH: config_hash(spec.config_files)},
                                     spec.volumes, spec.config_mount_path,
                                     naming.config_map_name(name)),
        },
    }


def pod_shape(spec: ServiceSpec, env: str, name: str = "", job: bool = False) -> PodShape:
    """What a release of `spec` sets in the pod besides image, env and resources."""
    template = (job_pod_template(spec, env, PLACEHOLDER_IMAGE) if job else
                deployment(spec, env, "x", name=name or None)["spec"]["template"])
    c = template["spec"]["containers"][0]
    return PodShape(ports=c.get("ports", []), readiness_probe=c.get("readinessProbe"),
                    volume_mounts=c.get("volumeMounts", []), volumes=template["spec"]["volumes"])


def job_pod_template(spec: ServiceSpec, env: str, image: str,
                     annotations: dict[str, str] | None = None) -> dict:
    """A cronjob service's pod: the service's pod without ports and probes, run to
    completion (restartPolicy Never; retries are the Job's backoffLimit)."""
    template = pod_template(spec.name, "stable", image, spec.port, spec.health_path,
                            spec.env_in(env), spec.resources_in(env), annotations or {},
                            spec.volumes, spec.config_mount_path)
    c = template["spec"]["containers"][0]
    c.pop("ports")
    c.pop("readinessProbe")
    template["spec"]["restartPolicy"] = "Never"
    return template


def cronjob(spec: ServiceSpec, env: str, namespace: str, image: str = PLACEHOLDER_IMAGE) -> dict:
    """A cronjob service's CronJob: suspended until its first release."""
    assert spec.schedule is not None
    s = spec.schedule
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": _meta(spec.name, namespace, spec.name),
        "spec": {
            "schedule": s.cron, "concurrencyPolicy": s.concurrency_policy,
            "suspend": image == PLACEHOLDER_IMAGE,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": naming.labels(spec.name)}, "spec": {
                "backoffLimit": s.backoff_limit, "activeDeadlineSeconds": s.active_deadline,
                "template": job_pod_template(spec, env, image)}},
        },
    }


def for_environment(spec: ServiceSpec, env: str, namespace: str) -> list[dict[str, Any]]:
    """Everything CreateService lays down in one environment, in creation order."""
    svc = spec.name
    ns_labels = {**naming.MANAGED_BY}
    if spec.mesh:
        ns_labels["istio-injection"] = "enabled"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": ns_labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(svc, namespace, svc)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(naming.config_map_name(svc), namespace, svc),
         "data": dict(spec.config_files)},
    ]
    if spec.type == "cronjob":  # no Deployment, Service, autoscaling or routes
        return objects + [cronjob(spec, env, namespace)]
    objects += [
        deployment(spec, env, namespace),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(svc, namespace, svc),
         "spec": {"selector": {"app": svc},
                  "ports": [{"name": "http", "port": 80, "targetPort": spec.port}]}},
    ]
    if spec.autoscaling:
        a = spec.autoscaling
        objects.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(svc, namespace, svc),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc},
                     "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": a.cpu_utilization}}}]}})
    if spec.min_available is not None:
        objects.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(svc, namespace, svc),
            "spec": {"minAvailable": spec.min_available, "selector": {"matchLabels": {"app": svc}}}})
    objects += istio_objects(spec, namespace)
    return objects


def istio_objects(spec: ServiceSpec, namespace: str) -> list[dict[str, Any]]:
    svc = spec.name
    objects: list[dict[str, Any]] = [
        {"apiVersion": ISTIO, "kind": "DestinationRule", "metadata": _meta(svc, namespace, svc),
         "spec": {"host": svc, "subsets": [
             {"name": "stable", "labels": {"version": "stable"}},
             {"name": "canary", "labels": {"version": "canary"}}]}},
    ]
    vs_spec = virtual_service_spec(svc, 100, 0, header_route=False)
    if spec.exposure == "external" and spec.host:
        objects.append({
            "apiVersion": ISTIO, "kind": "Gateway", "metadata": _meta(svc, namespace, svc),
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [spec.host]}]}})
        vs_spec["hosts"].append(spec.host)
        vs_spec["gateways"] = ["mesh", svc]
    objects.append({"apiVersion": ISTIO, "kind": "VirtualService",
                    "metadata": _meta(svc, namespace, svc), "spec": vs_spec})
    return objects


def virtual_service_spec(service: str, stable: int, canary: int, header_route: bool,
                         mirror: int = 0) -> dict:
    """The routes: the testers' header route to the canary (`header_route`), then the live
    weights, with `mirror` % of the live requests also copied to the canary (answers dropped)."""
    def dest(subset: str, weight: int) -> dict[str, Any]:
        return {"destination": {"host": service, "subset": subset}, "weight": weight}

    http: list[dict[str, Any]] = []
    if header_route:
        http.append({"name": "canary-testers",
                     "match": [{"headers": {"x-canary": {"exact": "always"}}}],
                     "route": [dest("canary", 100)]})
    primary: dict[str, Any] = {"name": "primary", "route": [dest("stable", stable), dest("canary", canary)]}
    if mirror:
        primary.update(mirror={"host": service, "subset": "canary"},
                       mirrorPercentage={"value": float(mirror)})
    http.append(primary)
    return {"hosts": [service], "http": http}
