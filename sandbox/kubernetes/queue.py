"""Which objects a controller of the Kubernetes stand-in must look at on its next tick.

A controller's sync of an object is a function of the store (the object, what it owns and
what those own), the simulation state that goes with them, the image lookups and the
clock; it writes through the store, and every simulation state change that matters comes
with a store write (a pod's status shows its state). So an object needs a look only when
- it, or anything it owns (transitively), was created, changed or deleted since its last
  look, by a client or by a controller (`Store.on_write`); a sync that writes marks its
  object again, so an object settles one no-op look after its last write;
- a time-based change is due (`wake`): a pod gets ready, an image lookup is pending, a
  progress deadline passes, a CronJob's next minute starts;
- a full resync is due (every `resync_s`), a safety net for anything missed.
Anything else is settled: looking at it would change nothing.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable

from sandbox.kubernetes.index import owner_uids, split_key
from sandbox.kubernetes.resources import Resource
from sandbox.kubernetes.store import Store

RESYNC_S = 5.0


class WorkQueue:
    def __init__(self, store: Store, resources: Iterable[Resource],
                 resync_s: float = RESYNC_S) -> None:
        self.store = store
        self.resources = {f"{r.group}/{r.plural}" for r in resources}
        self.resync_s = resync_s
        self.marked: set[str] = set()  # store keys written since the last `take`
        self._timers: list[tuple[float, str]] = []
        self._wake_at: dict[str, float] = {}  # the earliest per key; other heap entries lapse
        self._next_resync = float("-inf")  # the first tick looks at everything (e.g. a restart)
        store.on_write.append(self._written)

    def _written(self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj["metadata"]
        key = self.store.key(res, meta.get("namespace") if res.namespaced else None,
                             meta["name"])
        if f"{res.group}/{res.plural}" in self.resources:
            self.marked.add(key)
        # Then its owners, theirs, ... (a Pod -> its ReplicaSet -> its Deployment), before
        # and after the write (an owner it was taken from must replace it).
        seen = {key}
        owners = owner_uids(obj) | (owner_uids(old) if old is not None else set())
        while owners:
            uid = owners.pop()
            owner_key = self.store.index.by_uid.get(uid)
            if owner_key is None or owner_key in seen:
                continue
            seen.add(owner_key)
            if split_key(owner_key)[0] in self.resources:
                self.marked.add(owner_key)
            owners |= owner_uids(self.store.objects[owner_key])

    def wake(self, key: str, at: float | None) -> None:
        """Look at `key` again on the first tick at or after `at` (None: no need)."""
        if at is not None and at < self._wake_at.get(key, float("inf")):
            self._wake_at[key] = at
            heapq.heappush(self._timers, (at, key))

    def take(self, now: float) -> set[str]:
        """The keys to look at on this tick. Each look must re-`wake` what it still needs:
        the wakes of the keys returned are dropped."""
        due, self.marked = self.marked, set()
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, key = heapq.heappop(timers)
            if self._wake_at.get(key) == at:
                due.add(key)
        if now >= self._next_resync:
            self._next_resync = now + self.resync_s
            for res in self.resources:
                due.update(self.store.index.keys(res, None))
        for key in due:
            self._wake_at.pop(key, None)
        return due

    def put_back(self, keys: set[str]) -> None:
        """Keys a failed tick did not finish with: look at them again on the next one."""
        self.marked |= keys

    def run(self, now: float, reconcile: Callable[[set[str], float], None]) -> None:
        """One tick: `reconcile(due keys, now)`; if it fails, its keys come back next tick."""
        due = self.take(now)
        try:
            reconcile(due, now)
        except BaseException:
            self.put_back(due)
            raise

    def ordered(self, res: Resource, keys: set[str]) -> list[str]:
        """The keys of `res` still stored, oldest first (as a full reconcile takes them)."""
        prefix = f"{res.group}/{res.plural}/"
        seq = self.store.index.seq
        return sorted((k for k in keys if k.startswith(prefix) and k in seq),
                      key=seq.__getitem__)
