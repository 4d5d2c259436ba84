"""A snapshot of the world Kepler touches, for the end-to-end tests' "nothing changed"
checks: every object in the given namespaces of the Kubernetes stand-in (what controllers
own — ReplicaSets, Pods — and server-kept fields left out), so a failed, cancelled,
rejected or expired operation can be compared with the world before it."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.serve import Sandbox

KINDS = ("Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment",
         "CronJob", "Job", "PersistentVolumeClaim", "VirtualService", "DestinationRule",
         "Gateway")
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                 "selfLink")
SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def _normal(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in SERVER_FIELDS}
    if meta.get("annotations"):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items()
                               if k not in SERVER_ANNOTATIONS}
    return {k: v for k, v in {**obj, "metadata": meta}.items() if k != "status"}


def snapshot(sandbox: Sandbox, namespaces: list[str]) -> dict[str, dict[str, Any]]:
    world: dict[str, dict[str, Any]] = {}
    base = sandbox.urls["kubernetes"]
    for ns in namespaces:
        for kind in KINDS:
            if kind == "Namespace":
                url, listing = f"{base}/api/v1/namespaces/{ns}", False
            else:
                group = {"Deployment": "/apis/apps/v1", "CronJob": "/apis/batch/v1",
                         "Job": "/apis/batch/v1", "VirtualService": "/apis/networking.istio.io/v1",
                         "DestinationRule": "/apis/networking.istio.io/v1",
                         "Gateway": "/apis/networking.istio.io/v1"}.get(kind, "/api/v1")
                plural = {"PersistentVolumeClaim": "persistentvolumeclaims"}.get(
                    kind, kind.lower() + "s")
                url, listing = f"{base}{group}/namespaces/{ns}/{plural}", True
            response = httpx.get(url, timeout=10)
            if response.status_code == 404:
                continue
            response.raise_for_status()
            body = response.json()
            for obj in body.get("items", []) if listing else [body]:
                world[f"{kind} {ns}/{obj['metadata']['name']}"] = _normal({**obj, "kind": kind})
    return world


def differences(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """What differs, one line an object: the empty list when the world is as it was."""
    lines = [f"gone: {k}" for k in before if k not in after]
    lines += [f"new: {k}" for k in after if k not in before]
    lines += [f"changed: {k}: {_delta(before[k], after[k])}"
              for k in before if k in after and before[k] != after[k]]
    return lines


def _delta(a: Any, b: Any, path: str = "") -> str:
    """The first place two objects differ, for the failure message."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _delta(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _delta(x, y, f"{path}[{i}]")
    return f"{path or '.'}: {str(a)[:200]} -> {str(b)[:200]}"
