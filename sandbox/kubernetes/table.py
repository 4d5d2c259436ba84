"""Server-side printing: the `Table` kubectl asks for (`Accept: ...;as=Table;g=meta.k8s.io`),
with the columns `kubectl get` shows for each kind."""

from __future__ import annotations

import time
from typing import Any, Callable

from sandbox.kubernetes.store import parse_rfc3339

Column = tuple[str, str, int, Callable[[dict[str, Any]], Any]]  # name, type, priority, cell


def age(obj: dict[str, Any], created: str | None = None) -> str:
    created = created or obj["metadata"].get("creationTimestamp")
    try:
        seconds = max(0, int(time.time() - parse_rfc3339(str(created))))
    except ValueError:  # none, or a client's timestamp in another form
        return "<unknown>"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _pod_status(pod: dict[str, Any]) -> str:
    for cs in _status(pod).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(_status(pod).get("phase", "Pending"))


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = _status(pod).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for cs in statuses if cs.get('ready'))}/{total}"


def _containers(obj: dict[str, Any], field: str) -> str:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return ",".join(str(c.get(field, "")) for c in spec.get("containers") or [])


def _ports(svc: dict[str, Any]) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _event_object(event: dict[str, Any]) -> str:
    involved = event.get("involvedObject") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


NAME: Column = ("Name", "string", 0, lambda o: o["metadata"]["name"])
AGE: Column = ("Age", "string", 0, age)
COLUMNS: dict[str, list[Column]] = {
    "Deployment": [
        NAME,
        ("Ready", "string", 0, lambda o: f"{_status(o).get('readyReplicas', 0)}/"
                                         f"{(o.get('spec') or {}).get('replicas', 0)}"),
        ("Up-to-date", "integer", 0, lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _status(o).get("availableReplicas", 0)),
        AGE,
        ("Containers", "string", 1, lambda o: _containers(o, "name")),
        ("Images", "string", 1, lambda o: _containers(o, "image")),
    ],
    "ReplicaSet": [
        NAME,
        ("Desired", "integer", 0, lambda o: (o.get("spec") or {}).get("replicas", 0)),
        ("Current", "integer", 0, lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", 0, lambda o: _status(o).get("readyReplicas", 0)),
        AGE,
        ("Images", "string", 1, lambda o: _containers(o, "image")),
    ],
    "Pod": [
        NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, lambda o: str(sum(int(cs.get("restartCount", 0)) for cs in
                                                    _status(o).get("containerStatuses") or []))),
        AGE,
        ("IP", "string", 1, lambda o: _status(o).get("podIP", "<none>")),
        ("Node", "string", 1, lambda o: (o.get("spec") or {}).get("nodeName", "<none>")),
    ],
    "Service": [
        NAME,
        ("Type", "string", 0, lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _ports),
        AGE,
    ],
    "Event": [  # kubectl get events: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE
        ("Last Seen", "string", 0, lambda o: age(o, o.get("lastTimestamp"))),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, _event_object),
        ("Message", "string", 0, lambda o: o.get("message", "")),
        ("Name", "string", 1, lambda o: o["metadata"]["name"]),
    ],
    "Namespace": [NAME, ("Status", "string", 0, lambda o: _status(o).get("phase", "Active")),
                  AGE],
    "VirtualService": [
        NAME,
        ("Gateways", "string", 0, lambda o: str((o.get("spec") or {}).get("gateways", []))),
        ("Hosts", "string", 0, lambda o: str((o.get("spec") or {}).get("hosts", []))),
        AGE,
    ],
    "DestinationRule": [NAME, ("Host", "string", 0, lambda o: (o.get("spec") or {}).get("host")),
                        AGE],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept.replace(" ", "")


def table(kind: str, items: list[dict[str, Any]], resource_version: str,
          include_object: str | None) -> dict[str, Any]:
    columns = COLUMNS.get(kind, [NAME, AGE])
    rows = []
    for obj in items:
        if include_object == "Object":
            embedded: dict[str, Any] = obj
        elif include_object == "None":
            embedded = {}
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"]}
        rows.append({"cells": [cell(obj) for _, _, _, cell in columns], "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": [{"name": name, "type": typ, "format": "name" if name == "Name"
                                   else "", "description": name, "priority": priority}
                                  for name, typ, priority, _ in columns],
            "rows": rows}
