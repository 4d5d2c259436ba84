"""Secondary indexes over the Kubernetes stand-in's objects, so the reconcile loop reads
one resource, one namespace or one owner's dependants without scanning every object.

The store keeps its objects in one dict keyed `group/plural/namespace/name` (that is
what it persists); this index only holds those keys, so it never goes stale when an
object is replaced, provided every write to that dict goes through `add`/`replace`/
`remove` (the store's `_put` and `_drop`).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable


def split_key(key: str) -> tuple[str, str]:
    """("group/plural", namespace) of a store key; namespace is "" when cluster-scoped."""
    group, plural, namespace, _ = key.split("/", 3)
    return f"{group}/{plural}", namespace


def owner_uids(obj: dict[str, Any]) -> set[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences")
    if not isinstance(refs, list):
        return set()
    return {r["uid"] for r in refs if isinstance(r, dict) and isinstance(r.get("uid"), str)}


class ObjectIndex:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        # Keys as insertion-ordered dicts (values unused), matching the order of `objects`:
        # an update keeps a key's place, a delete and re-create moves it to the end.
        self.by_resource: dict[str, dict[str, None]] = {}
        self.by_namespace: dict[tuple[str, str], dict[str, None]] = {}
        self.by_owner: dict[str, set[str]] = {}
        self.by_uid: dict[str, str] = {}  # metadata.uid -> key
        self.seq: dict[str, int] = {}  # a key's position in `objects`, to order owner lookups
        self._counter = itertools.count()
        for key, obj in objects.items():
            self.add(key, obj)

    def add(self, key: str, obj: dict[str, Any]) -> None:
        res, namespace = split_key(key)
        self.seq[key] = next(self._counter)
        self.by_resource.setdefault(res, {})[key] = None
        self.by_namespace.setdefault((res, namespace), {})[key] = None
        uid = (obj.get("metadata") or {}).get("uid")
        if isinstance(uid, str):
            self.by_uid[uid] = key
        self._link(key, obj)

    def replace(self, key: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        # The store keeps an object's uid across updates, so `by_uid` needs no change.
        if owner_uids(old) != owner_uids(new):
            self._unlink(key, old)
            self._link(key, new)

    def remove(self, key: str, obj: dict[str, Any]) -> None:
        res, namespace = split_key(key)
        del self.seq[key]
        _discard(self.by_resource, res, key)
        _discard(self.by_namespace, (res, namespace), key)
        uid = (obj.get("metadata") or {}).get("uid")
        if isinstance(uid, str) and self.by_uid.get(uid) == key:
            del self.by_uid[uid]
        self._unlink(key, obj)

    def keys(self, res: str, namespace: str | None) -> Iterable[str]:
        found = (self.by_resource.get(res) if namespace is None
                 else self.by_namespace.get((res, namespace)))
        return found or ()

    def owned(self, uid: str) -> list[str]:
        """Keys of the objects with an ownerReference to `uid`, in insertion order."""
        return sorted(self.by_owner.get(uid, ()), key=self.seq.__getitem__)

    def _link(self, key: str, obj: dict[str, Any]) -> None:
        for uid in owner_uids(obj):
            self.by_owner.setdefault(uid, set()).add(key)

    def _unlink(self, key: str, obj: dict[str, Any]) -> None:
        for uid in owner_uids(obj):
            keys = self.by_owner.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_owner[uid]


def _discard(index: dict[Any, dict[str, None]], bucket: Any, key: str) -> None:
    keys = index.get(bucket)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[bucket]
