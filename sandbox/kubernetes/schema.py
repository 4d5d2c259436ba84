"""Server-side defaulting and validation, per kind, for what the stand-in serves.

Not the full apiserver schema: the rules Kepler (and a user's typo) can hit —
names, labels, selectors matching templates, containers with names and images,
non-negative replicas — plus strict/warn handling of unknown top-level fields.
"""

from __future__ import annotations

import base64
import ipaddress
import zlib
from typing import Any

from sandbox.kubernetes import cron
from sandbox.kubernetes.resources import (ApiError, Invalid, Resource, label_value_errors,
                                          name_errors, validate_labels)
from sandbox.kubernetes.select import requirements_from_label_selector, matches

TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}
EXTRA_TOP_LEVEL = {
    "ConfigMap": {"data", "binaryData", "immutable"},
    "Secret": {"data", "stringData", "type", "immutable"},
    "ServiceAccount": {"secrets", "imagePullSecrets", "automountServiceAccountToken"},
    "ClusterRole": {"rules", "aggregationRule"},
    "Role": {"rules"},
    "ClusterRoleBinding": {"subjects", "roleRef"},
    "RoleBinding": {"subjects", "roleRef"},
    "Event": {"involvedObject", "reason", "message", "source", "firstTimestamp",
              "lastTimestamp", "count", "type", "eventTime", "series", "action", "related",
              "reportingComponent", "reportingInstance"},
}
METADATA_FIELDS = {"name", "generateName", "namespace", "uid", "resourceVersion", "generation",
                   "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                   "labels", "annotations", "ownerReferences", "finalizers", "managedFields",
                   "selfLink"}
DEPLOYMENT_SPEC = {"replicas", "selector", "template", "strategy", "minReadySeconds",
                   "revisionHistoryLimit", "paused", "progressDeadlineSeconds"}


def unknown_fields(res: Resource, obj: dict[str, Any]) -> list[str]:
    """Fields the stand-in knows the real schema would refuse (strict decoding)."""
    if res.group == "networking.istio.io":
        allowed = TOP_LEVEL
    else:
        allowed = TOP_LEVEL | EXTRA_TOP_LEVEL.get(res.kind, set())
    unknown = [k for k in obj if k not in allowed]
    unknown += [f"metadata.{k}" for k in obj.get("metadata") or {} if k not in METADATA_FIELDS]
    if res.kind == "Deployment" and isinstance(obj.get("spec"), dict):
        unknown += [f"spec.{k}" for k in obj["spec"] if k not in DEPLOYMENT_SPEC]
    return unknown


def _cluster_ip(namespace: str, name: str) -> str:
    n = zlib.crc32(f"{namespace}/{name}".encode()) % (256 * 254)
    return str(ipaddress.IPv4Address("10.96.0.0") + 256 + n)


def apply_defaults(res: Resource, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {}) if res.kind not in EXTRA_TOP_LEVEL else None
    if res.kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    elif res.kind == "Deployment" and spec is not None:
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy["type"] = "RollingUpdate"
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxSurge", "25%")
            rolling.setdefault("maxUnavailable", "25%")
        _default_pod_spec(spec.get("template", {}).setdefault("spec", {}))
    elif res.kind == "ReplicaSet" and spec is not None:
        spec.setdefault("replicas", 1)
        _default_pod_spec(spec.get("template", {}).setdefault("spec", {}))
    elif res.kind == "Pod" and spec is not None:
        _default_pod_spec(spec)
        obj.setdefault("status", {}).setdefault("phase", "Pending")
    elif res.kind == "Service" and spec is not None:
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") != "None":
            spec.setdefault("clusterIP", _cluster_ip(meta.get("namespace", ""), meta["name"]))
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif res.kind == "Secret":
        obj.setdefault("type", "Opaque")
        for k, v in (obj.pop("stringData", None) or {}).items():
            obj.setdefault("data", {})[k] = base64.b64encode(str(v).encode()).decode()


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in spec.get("containers") or []:
        if isinstance(c, dict):
            c.setdefault("imagePullPolicy",
                         "Always" if str(c.get("image", "")).endswith(":latest") else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if isinstance(c.get(probe), dict):
                    _default_probe(c[probe])


def _default_probe(probe: dict[str, Any]) -> None:
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def validate(res: Resource, obj: dict[str, Any]) -> None:
    """Raise a 422 Invalid Status naming every field that breaks a rule."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    invalid = Invalid()
    if not name:
        invalid.add("metadata.name", "name or generateName is required",
                    reason="FieldValueRequired")
    else:
        for e in name_errors(name, res.name_rule):
            invalid.add("metadata.name", e, name)
    validate_labels(meta.get("labels"), "metadata.labels", invalid)
    annotations = meta.get("annotations")
    if annotations is not None and not (isinstance(annotations, dict) and all(
            isinstance(v, str) for v in annotations.values())):
        invalid.add("metadata.annotations", "must be a map of strings", "")
    spec = obj.get("spec")
    if res.kind in ("Deployment", "ReplicaSet") and isinstance(spec, dict):
        _validate_workload(spec, invalid)
    elif res.kind == "Pod" and isinstance(spec, dict):
        _validate_pod_spec(spec, "spec", invalid)
    elif res.kind == "Service" and isinstance(spec, dict):
        for i, port in enumerate(spec.get("ports") or []):
            p = port.get("port")
            if not isinstance(p, int) or not 0 < p < 65536:
                invalid.add(f"spec.ports[{i}].port", "must be between 1 and 65535, inclusive", p)
        for k, v in (spec.get("selector") or {}).items():
            for e in label_value_errors(str(v)):
                invalid.add(f"spec.selector[{k}]", e, v)
    elif res.kind in ("Job", "CronJob") and isinstance(spec, dict):
        _validate_batch(res.kind, spec, invalid)
    elif res.kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
        if not isinstance(spec.get("maxReplicas"), int) or spec["maxReplicas"] < 1:
            invalid.add("spec.maxReplicas", "must be greater than or equal to 1",
                        spec.get("maxReplicas"))
        if not (spec.get("scaleTargetRef") or {}).get("name"):
            invalid.add("spec.scaleTargetRef.name", "", reason="FieldValueRequired")
    invalid.raise_for(res, name)


def _validate_workload(spec: dict[str, Any], invalid: Invalid) -> None:
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        invalid.add("spec.replicas", "must be greater than or equal to 0", replicas)
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        invalid.add("spec.selector", "", reason="FieldValueRequired")
    else:
        try:
            reqs = requirements_from_label_selector(selector)
        except (KeyError, TypeError):
            invalid.add("spec.selector", "invalid label selector", selector)
        else:
            if not matches(reqs, labels):
                invalid.add("spec.template.metadata.labels",
                            "`selector` does not match template `labels`", labels)
    validate_labels(labels, "spec.template.metadata.labels", invalid)
    _validate_pod_spec(template.get("spec") or {}, "spec.template.spec", invalid)


def _validate_pod_spec(spec: dict[str, Any], field: str, invalid: Invalid) -> None:
    containers = spec.get("containers")
    if not containers:
        invalid.add(f"{field}.containers", "", reason="FieldValueRequired")
        return
    seen: set[str] = set()
    for i, c in enumerate(containers):
        if not isinstance(c, dict):
            invalid.add(f"{field}.containers[{i}]", "must be an object", c)
            continue
        cname = c.get("name")
        if not cname:
            invalid.add(f"{field}.containers[{i}].name", "", reason="FieldValueRequired")
        else:
            for e in name_errors(cname, "label"):
                invalid.add(f"{field}.containers[{i}].name", e, cname)
            if cname in seen:
                invalid.add(f"{field}.containers[{i}].name", "", cname,
                            reason="FieldValueDuplicate")
            seen.add(cname)
        if not c.get("image"):
            invalid.add(f"{field}.containers[{i}].image", "", reason="FieldValueRequired")


def _validate_batch(kind: str, spec: dict[str, Any], invalid: Invalid) -> None:
    """A Job's (or a CronJob's jobTemplate's) pods run to completion; a CronJob's schedule
    must parse."""
    prefix = "spec"
    if kind == "CronJob":
        try:
            cron.parse(str(spec.get("schedule", "")))
        except ValueError as e:
            invalid.add("spec.schedule", str(e), spec.get("schedule"))
        if spec.get("concurrencyPolicy", "Allow") not in ("Allow", "Forbid", "Replace"):
            invalid.add("spec.concurrencyPolicy", 'supported values: "Allow", "Forbid", "Replace"',
                        spec.get("concurrencyPolicy"), reason="FieldValueNotSupported")
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        prefix = "spec.jobTemplate.spec"
    pod = (spec.get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy") not in ("OnFailure", "Never"):
        invalid.add(f"{prefix}.template.spec.restartPolicy", 'supported values: "OnFailure", '
                    '"Never"', pod.get("restartPolicy"), reason="FieldValueNotSupported")
    _validate_pod_spec(pod, f"{prefix}.template.spec", invalid)


def check_field_validation(res: Resource, obj: dict[str, Any], mode: str | None) -> list[str]:
    """Apply the `fieldValidation` query parameter; returns warnings for Warn mode."""
    unknown = unknown_fields(res, obj)
    if not unknown or (mode or "").lower() == "ignore":
        return []
    if (mode or "").lower() == "strict":
        detail = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise ApiError(400, "BadRequest", f'{res.kind} in version "{res.versions[0]}" cannot '
                       f"be handled as a {res.kind}: strict decoding error: {detail}")
    for u in unknown:
        if "." not in u:
            obj.pop(u, None)  # Warn mode drops unknown top-level fields, as decoding does
    return [f'unknown field "{u}"' for u in unknown]
