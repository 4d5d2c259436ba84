"""The Kubernetes stand-in's object store: CRUD with resourceVersion, generation,
ownerReference cascades, watch fan-out, and persistence in one JSON document.

Everything runs on the sandbox's event loop thread, so a method is atomic.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from sandbox.common import Audit, StateStore
from sandbox.kubernetes.index import ObjectIndex, split_key
from sandbox.kubernetes.resources import (RESOURCES, ApiError, Resource, already_exists, conflict,
                                          not_found, resource_for_kind)
from sandbox.kubernetes.schema import apply_defaults, validate
from sandbox.kubernetes.select import Requirement, fields_match, matches

HISTORY = 5000  # watch events kept for resuming a watch from a resourceVersion


_SCALARS = (str, int, float, bool, type(None))


def clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what the store holds): a third of copy.deepcopy's
    CPU, the most of the stand-in's at 200 releases at once (bench/RESULTS.md, issue 31)."""
    kind = type(value)
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}
    if kind is list:
        return [clone(v) for v in value]
    return value if kind in _SCALARS else copy.deepcopy(value)


_last_second: tuple[int, str] = (-1, "")


def now_rfc3339(ts: float | None = None) -> str:
    global _last_second
    second = int(ts if ts is not None else time.time())
    if second != _last_second[0]:  # formatted once a second, not once a write
        _last_second = (second, datetime.fromtimestamp(second, tz=timezone.utc)
                        .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _last_second[1]


def parse_rfc3339(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def images_of(obj: dict[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or spec
    return [c.get("image") for c in pod_spec.get("containers") or [] if isinstance(c, dict)]


@dataclass
class Watcher:
    res: Resource
    namespace: str | None
    labels: list[Requirement]
    fields: list[tuple[str, str, str]]
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=10000))

    def wants(self, res: Resource, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (res is self.res
                and (self.namespace is None or meta.get("namespace") == self.namespace)
                and matches(self.labels, meta.get("labels"))
                and fields_match(self.fields, obj))


class Store:
    def __init__(self, directory: Path | None, audit: Audit) -> None:
        self.state = StateStore(directory / "objects.json" if directory else None,
                                {"rv": 0, "objects": {}, "sim": {}})
        self.audit = audit
        self.history: deque[tuple[int, str, Resource, dict[str, Any]]] = deque(maxlen=HISTORY)
        self.watchers: list[Watcher] = []
        self.on_delete: list[Callable[[Resource, dict[str, Any]], None]] = []
        # Called with every object created, changed or deleted (what a watch would see) and,
        # for a change, its previous version: the controllers learn what to reconcile next.
        self.on_write: list[Callable[[Resource, dict[str, Any], dict[str, Any] | None],
                                     None]] = []
        self.dirty = False
        self.index = ObjectIndex(self.objects)

    # -- reading -------------------------------------------------------------------

    @property
    def objects(self) -> dict[str, dict[str, Any]]:
        """Every object by key (read-only: writes go through `_put`/`_drop`, which keep
        `self.index` in step)."""
        return self.state.data["objects"]

    @property
    def sim(self) -> dict[str, Any]:
        """Simulation state that is not part of any API object (persisted too)."""
        return self.state.data["sim"]

    @property
    def rv(self) -> int:
        return int(self.state.data["rv"])

    @staticmethod
    def key(res: Resource, namespace: str | None, name: str) -> str:
        return f"{res.group}/{res.plural}/{namespace or ''}/{name}"

    def find(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object itself (callers must not mutate it)."""
        return self.objects.get(self.key(res, namespace, name))

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.find(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return clone(obj)

    def iter(self, res: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of `res` (in `namespace`, if given), oldest first."""
        objects = self.objects
        keys = self.index.keys(f"{res.group}/{res.plural}",
                               namespace if res.namespaced else None)
        return [objects[k] for k in keys]

    def owned(self, res: Resource, namespace: str | None, uid: str) -> list[dict[str, Any]]:
        """The stored objects of `res` in `namespace` with an ownerReference to `uid`
        (controller or not), oldest first: `iter` filtered, without the scan."""
        prefix = f"{res.group}/{res.plural}/"
        if namespace is not None and res.namespaced:
            prefix += f"{namespace}/"
        objects = self.objects
        return [objects[k] for k in self.index.owned(uid) if k.startswith(prefix)]

    def list(self, res: Resource, namespace: str | None, labels: list[Requirement],
             fields: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        items = [o for o in self.iter(res, namespace)
                 if matches(labels, o["metadata"].get("labels")) and fields_match(fields, o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return clone(items)

    # -- writing -------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.state.data["rv"] = self.rv + 1
        return str(self.rv)

    def _publish(self, kind: str, res: Resource, obj: dict[str, Any],
                 old: dict[str, Any] | None = None) -> None:
        snapshot = clone(obj)
        self.history.append((int(obj["metadata"]["resourceVersion"]), kind, res, snapshot))
        for w in list(self.watchers):
            if w.wants(res, snapshot):
                try:
                    w.queue.put_nowait((kind, snapshot))
                except asyncio.QueueFull:
                    self.watchers.remove(w)  # a stuck client; its stream ends
        self.dirty = True
        for hook in self.on_write:
            hook(res, obj, old)

    def _audit(self, action: str, res: Resource, obj: dict[str, Any], actor: str) -> None:
        meta = obj["metadata"]
        detail: dict[str, Any] = {"kind": res.kind, "namespace": meta.get("namespace"),
                                  "name": meta["name"], "by": actor,
                                  "resourceVersion": meta.get("resourceVersion")}
        if res.kind in ("Deployment", "ReplicaSet"):
            detail["images"] = images_of(obj)
            detail["replicas"] = (obj.get("spec") or {}).get("replicas")
            detail["generation"] = meta.get("generation")  # unchanged by a metadata-only write
        self.audit.record(action, **detail)

    def create(self, res: Resource, obj: dict[str, Any], *, actor: str = "api",
               audited: bool = True, copy_back: bool = True) -> dict[str, Any]:
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        namespace = meta.get("namespace") if res.namespaced else None
        if res.namespaced:
            if not namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object is required")
            if self.find(resource_for_kind("Namespace"), None, namespace) is None:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                               {"name": namespace, "kind": "namespaces"})
        else:
            meta.pop("namespace", None)
        obj["apiVersion"] = res.api_version()
        obj["kind"] = res.kind
        if "status" in res.subresources and res.kind != "Pod":
            obj["status"] = {}  # status is the controllers' to write, not the creator's
        apply_defaults(res, obj)
        validate(res, obj)
        if self.find(res, namespace, meta["name"]) is not None:
            raise already_exists(res, meta["name"])
        for stale in ("resourceVersion", "uid", "deletionTimestamp", "managedFields"):
            meta.pop(stale, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if res.has_generation:
            meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        self._put(self.key(res, namespace, meta["name"]), obj)
        self._publish("ADDED", res, obj)
        if audited:
            self._audit("create", res, obj, actor)
            self.save()
        return clone(obj) if copy_back else obj

    def update(self, res: Resource, obj: dict[str, Any], *, subresource: str | None = None,
               actor: str = "api", action: str = "update",
               audited: bool = True, copy_back: bool = True) -> dict[str, Any]:
        """Write `obj` over the stored object; its copy (or, `copy_back=False`, for a
        caller that only reads it, the stored object itself: never to be mutated)."""
        # A status write reads only the name, resourceVersion and status of `obj`.
        obj = {**obj} if subresource == "status" else clone(obj)
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace") if res.namespaced else None
        current = self.find(res, namespace, meta.get("name", ""))
        if current is None:
            raise not_found(res, meta.get("name", ""))
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise conflict(res, meta["name"])
        if subresource == "status":  # stored objects are never changed in place: share all
            obj = {**current, "metadata": dict(current["metadata"]),  # but what changes
                   "status": clone(obj.get("status", {}))}
        else:
            if "status" in current and "status" in res.subresources:
                obj["status"] = clone(current["status"])
            for kept in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if kept in current["metadata"]:
                    meta[kept] = current["metadata"][kept]
                else:
                    meta.pop(kept, None)
            obj["apiVersion"], obj["kind"] = res.api_version(), res.kind
            apply_defaults(res, obj)
            validate(res, obj)
        meta = obj["metadata"]
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if obj == current:
            return clone(current) if copy_back else current  # no-op: no new resourceVersion
        if res.has_generation and _spec_of(obj) != _spec_of(current):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        self._put(self.key(res, namespace, meta["name"]), obj)
        self._publish("MODIFIED", res, obj, current)
        if audited:
            self._audit(action, res, obj, actor)
            self.save()
        return clone(obj) if copy_back else obj

    def delete(self, res: Resource, namespace: str | None, name: str, *,
               propagation: str = "Background", actor: str = "api",
               audited: bool = True, precondition_rv: str | None = None) -> dict[str, Any]:
        key = self.key(res, namespace if res.namespaced else None, name)
        obj = self.objects.get(key)
        if obj is None:
            raise not_found(res, name)
        if precondition_rv and precondition_rv != obj["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        uid = obj["metadata"]["uid"]
        self._drop(key)
        for dependant_res, dependant in self._dependants(uid):
            dmeta = dependant["metadata"]
            if propagation == "Orphan":
                refs = [r for r in dmeta["ownerReferences"] if r.get("uid") != uid]
                orphan = clone(dependant)
                orphan["metadata"]["ownerReferences"] = refs
                self.update(dependant_res, orphan, actor=actor, audited=False)
            else:
                self.delete(dependant_res, dmeta.get("namespace"), dmeta["name"],
                            actor=actor, audited=audited)
        if res.kind == "Namespace":
            for other in RESOURCES:
                if other.namespaced:
                    for o in list(self.iter(other, name)):
                        if self.find(other, name, o["metadata"]["name"]) is not None:
                            self.delete(other, name, o["metadata"]["name"], actor=actor,
                                        audited=False)
        obj = {**obj, "metadata": dict(obj["metadata"])}  # stored versions stay as they were
        obj["metadata"]["resourceVersion"] = self._next_rv()
        obj["metadata"]["deletionTimestamp"] = now_rfc3339()
        self._publish("DELETED", res, obj)
        for hook in self.on_delete:
            hook(res, obj)
        if audited:
            self._audit("delete", res, obj, actor)
            self.save()
        return clone(obj)

    def _put(self, key: str, obj: dict[str, Any]) -> None:
        old = self.objects.get(key)
        self.objects[key] = obj
        if old is None:
            self.index.add(key, obj)
        else:
            self.index.replace(key, old, obj)

    def _drop(self, key: str) -> None:
        self.index.remove(key, self.objects.pop(key))

    def _dependants(self, uid: str) -> list[tuple[Resource, dict[str, Any]]]:
        """Objects with an ownerReference to `uid`, by resource (in RESOURCES order), then
        oldest first."""
        by_res: dict[str, list[dict[str, Any]]] = {}
        for key in self.index.owned(uid):
            by_res.setdefault(split_key(key)[0], []).append(self.objects[key])
        return [(res, o) for res in RESOURCES
                for o in by_res.get(f"{res.group}/{res.plural}", ())]

    def events_since(self, rv: int) -> list[tuple[int, str, Resource, dict[str, Any]]] | None:
        """Watch events after `rv`, or None when they are no longer kept (410 Gone)."""
        if rv >= self.rv:
            return []
        if not self.history or self.history[0][0] > rv + 1:
            return None
        return [e for e in self.history if e[0] > rv]

    def save(self) -> None:
        self.state.save()
        self.dirty = False


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
