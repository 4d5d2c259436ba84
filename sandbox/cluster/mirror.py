"""A real API server's objects, mirrored (list, then watch) into the stand-in's Store, so what
reads that store (the traffic simulation, and through it the sandbox's Prometheus) sees the real
cluster's Services, pods, ReplicaSets, VirtualServices and DestinationRules.

The mirror keeps each object as the API server sent it (its uid, resourceVersion and status):
it writes below the store's API (create/update assign their own uid and resourceVersion), with
the same index upkeep and write hooks, so a reader cannot tell a mirrored store from the
stand-in's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx

from sandbox.common import Audit
from sandbox.kubernetes.resources import Resource
from sandbox.kubernetes.store import Store

from .kubeapi import ApiStatusError, Gone, KubeApi

log = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed list or a broken watch
ABSENT_RETRY_S = 10.0  # a resource the server does not serve (e.g. no Istio CRDs yet)

Listener = Callable[[str, Resource, dict[str, Any]], None]


class MirrorStore(Store):
    """An in-memory Store written only by the mirror."""

    def __init__(self) -> None:
        super().__init__(None, Audit(None))

    def mirror(self, res: Resource, obj: dict[str, Any]) -> bool:
        """Put the API server's version of `obj`; False when it is the one already held."""
        meta = obj["metadata"]
        key = self.key(res, meta.get("namespace") if res.namespaced else None, meta["name"])
        old = self.objects.get(key)
        if old is not None and old["metadata"].get("resourceVersion") == meta.get("resourceVersion"):
            return False
        if old is not None and old["metadata"].get("uid") != meta.get("uid"):
            self.forget(res, old)  # deleted and created again between two looks
            old = None
        self._put(key, obj)
        self._publish("MODIFIED" if old is not None else "ADDED", res, obj, old)
        return True

    def forget(self, res: Resource, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        key = self.key(res, meta.get("namespace") if res.namespaced else None, meta["name"])
        held = self.objects.get(key)
        if held is None:
            return False
        self._drop(key)
        self._publish("DELETED", res, held)
        for hook in self.on_delete:
            hook(res, held)
        return True


class Mirror:
    """Keeps `store` in step with the API server for each of `resources`; `listeners` hear every
    change (ADDED, MODIFIED or DELETED with the object) after the store has it."""

    def __init__(self, api: KubeApi, store: MirrorStore, resources: tuple[Resource, ...]) -> None:
        self.api = api
        self.store = store
        self.resources = resources
        self.listeners: list[Listener] = []
        self.synced = asyncio.Event()
        self._listed: set[str] = set()
        self.errors: list[str] = []  # the last few, for whoever wonders why nothing moves

    async def run(self) -> None:
        await asyncio.gather(*(self._sync(res) for res in self.resources))

    def _notify(self, kind: str, res: Resource, obj: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(kind, res, obj)
            except Exception:  # a listener's bug must not stop the mirror
                log.exception("real cluster mirror: listener failed on %s %s", kind, res.kind)

    def _replace_all(self, res: Resource, items: list[dict[str, Any]]) -> None:
        keep = {(i["metadata"].get("namespace"), i["metadata"]["name"]) for i in items}
        for held in list(self.store.iter(res)):
            meta = held["metadata"]
            if (meta.get("namespace"), meta["name"]) not in keep and self.store.forget(res, held):
                self._notify("DELETED", res, held)
        for item in items:
            if self.store.mirror(res, item):
                self._notify("MODIFIED", res, item)

    def _apply(self, kind: str, res: Resource, obj: dict[str, Any]) -> None:
        obj.setdefault("apiVersion", res.api_version())
        obj.setdefault("kind", res.kind)
        changed = self.store.forget(res, obj) if kind == "DELETED" else self.store.mirror(res, obj)
        if changed:
            self._notify(kind, res, obj)

    def _listed_once(self, res: Resource) -> None:
        self._listed.add(res.plural)
        if len(self._listed) == len(self.resources):
            self.synced.set()

    def _error(self, message: str) -> None:
        self.errors = [*self.errors[-9:], message]

    async def _sync(self, res: Resource) -> None:
        while True:
            try:
                items, rv = await self.api.list(res)
            except ApiStatusError as e:
                if e.code == 404:  # not served (yet): nothing of it to mirror
                    self._replace_all(res, [])
                    self._listed_once(res)
                    await asyncio.sleep(ABSENT_RETRY_S)
                    continue
                self._error(f"list {res.plural}: {e}")
                await asyncio.sleep(RETRY_S)
                continue
            except httpx.HTTPError as e:
                self._error(f"list {res.plural}: {e!r}")
                await asyncio.sleep(RETRY_S)
                continue
            self._replace_all(res, items)
            self._listed_once(res)
            await self._watch(res, rv)

    async def _watch(self, res: Resource, rv: str) -> None:
        """Follow changes from `rv` until the watch history is gone (back to a list)."""
        while True:
            try:
                async for kind, obj in self.api.watch(res, rv):
                    rv = str(obj["metadata"].get("resourceVersion") or rv)
                    if kind != "BOOKMARK":
                        self._apply(kind, res, obj)
            except Gone:
                return
            except (ApiStatusError, httpx.HTTPError, ValueError) as e:
                self._error(f"watch {res.plural}: {e!r}")
                await asyncio.sleep(RETRY_S)
