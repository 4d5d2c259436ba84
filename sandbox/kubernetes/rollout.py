"""The Deployment controller: ReplicaSet per pod template, rolling updates within
maxSurge/maxUnavailable, revisions, history limit, and the status and conditions
the real controller reports (Progressing / Available, ProgressDeadlineExceeded).

`Controller.tick` reconciles the objects that may have changed; the stand-in calls it on
a short period.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sandbox.kubernetes.images import ImageResolver
from sandbox.kubernetes.pods import PODS, REPLICASETS, Kubelet, owned_by, owner_ref
from sandbox.kubernetes.queue import WorkQueue
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.store import Store, now_rfc3339, clone
from sandbox.world import SandboxSettings

DEPLOYMENTS = resource_for_kind("Deployment")
EVENTS = resource_for_kind("Event")
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"
# Deployment annotations the controller does not copy onto its ReplicaSets.
SKIPPED_ANNOTATIONS = {REVISION, REVISION_HISTORY, "kubectl.kubernetes.io/last-applied-configuration",
                       "deployment.kubernetes.io/desired-replicas",
                       "deployment.kubernetes.io/max-replicas"}
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
MAX_EVENTS_PER_NAMESPACE = 200


def template_hash(template: dict[str, Any]) -> str:
    clean = _without_hash(template)
    h = 0x811C9DC5  # FNV-1a, 32 bit, over the canonical JSON
    for b in json.dumps(clean, sort_keys=True).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in str(h))


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """`template` without the pod-template-hash label; shares everything else with it
    (this runs for every ReplicaSet on every tick, so no deep copy)."""
    meta = template.get("metadata") or {}
    labels = meta.get("labels")
    if not isinstance(labels, dict) or HASH_LABEL not in labels:
        return template
    return {**template, "metadata": {**meta, "labels": {k: v for k, v in labels.items()
                                                          if k != HASH_LABEL}}}


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def revision_of(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


class Controller:
    def __init__(self, store: Store, images: ImageResolver, settings: SandboxSettings) -> None:
        self.store = store
        self.settings = settings
        self.kubelet = Kubelet(store, images, settings.seconds_per_replica)
        self.tick_seconds = max(0.02, min(0.25, settings.seconds_per_replica / 3))
        self.store.sim.setdefault("deployments", {})
        self.queue = WorkQueue(store, (DEPLOYMENTS, REPLICASETS))

    def tick(self, now: float) -> None:
        """Reconcile what may have changed (see sandbox/kubernetes/queue.py): the Deployments
        and ReplicaSets written or due, and those this tick's own writes touch."""
        self.queue.run(now, self._reconcile)

    def _reconcile(self, due: set[str], now: float) -> None:
        queue, objects, sims = self.queue, self.store.objects, self.store.sim["deployments"]
        for key in queue.ordered(DEPLOYMENTS, due):
            if key in objects:
                meta = objects[key]["metadata"]
                self.sync_deployment(meta["namespace"], meta["name"], now)
        # `queue.marked` holds what this tick wrote so far: e.g. a ReplicaSet just scaled.
        for key in queue.ordered(REPLICASETS, due | queue.marked):
            rs = objects.get(key)
            if rs is not None:
                queue.wake(key, self.kubelet.sync_replicaset(rs, now))
        for key in queue.ordered(DEPLOYMENTS, due | queue.marked):
            if key not in objects:
                continue
            meta = objects[key]["metadata"]
            before = dict(sims.get(meta["uid"]) or {})
            queue.wake(key, self.sync_status(meta["namespace"], meta["name"], now))
            if sims.get(meta["uid"], {}) != before:
                queue.marked.add(key)  # not settled while its simulation state moves

    # -- rollout -------------------------------------------------------------------

    def replicasets_of(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        uid = d["metadata"]["uid"]
        return [rs for rs in self.store.owned(REPLICASETS, d["metadata"]["namespace"], uid)
                if owned_by(rs, uid)]

    def _counts(self, rs: dict[str, Any]) -> tuple[int, int]:
        pods = self.kubelet.pods_of(rs)
        return len(pods), sum(1 for p in pods if self.kubelet.is_ready(p))

    def _totals(self, rses: list[dict[str, Any]],
                new_rs: dict[str, Any] | None) -> tuple[int, int, int]:
        """(replicas, ready, updated): pods of all ReplicaSets, the ready ones, the new one's."""
        replicas = ready = updated = 0
        for rs in rses:
            total, rs_ready = self._counts(rs)
            replicas += total
            ready += rs_ready
            if rs is new_rs:
                updated = total
        return replicas, ready, updated

    def sync_deployment(self, namespace: str, name: str, now: float) -> None:
        d = self.store.find(DEPLOYMENTS, namespace, name)
        if d is None or d["spec"].get("paused"):
            return
        rses = self.replicasets_of(d)
        template = _without_hash(d["spec"]["template"])
        new_rs = next((rs for rs in rses if _without_hash(rs["spec"]["template"]) == template),
                      None)
        max_revision = max((revision_of(rs) for rs in rses), default=0)
        sim = self.store.sim["deployments"].setdefault(d["metadata"]["uid"], {})
        if new_rs is None:
            new_rs = self._create_rs(d, max_revision + 1)
            sim.update(reason="NewReplicaSetCreated", last_progress=now,
                       message=f'Created new replica set "{new_rs["metadata"]["name"]}"')
            rses.append(new_rs)
        elif revision_of(new_rs) < max_revision:
            new_rs = self._bump_revision(new_rs, max_revision + 1)
            sim.update(reason="ReplicaSetUpdated", last_progress=now,
                       message=f'ReplicaSet "{new_rs["metadata"]["name"]}" is progressing.')
        annotations = d["metadata"].get("annotations") or {}
        if annotations.get(REVISION) != str(revision_of(new_rs)):
            updated = clone(d)
            updated["metadata"].setdefault("annotations", {})[REVISION] = str(revision_of(new_rs))
            d = self.store.update(DEPLOYMENTS, updated, actor="controller", audited=False)
        olds = sorted((rs for rs in rses if rs is not new_rs and
                       rs["metadata"]["uid"] != new_rs["metadata"]["uid"]), key=revision_of)
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            self._recreate(d, new_rs, olds)
        else:
            self._rolling(d, new_rs, olds)
        self._cleanup_history(d, olds)

    def _create_rs(self, d: dict[str, Any], revision: int) -> dict[str, Any]:
        template = clone(d["spec"]["template"])
        pod_hash = template_hash(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = clone(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        annotations = {k: v for k, v in (d["metadata"].get("annotations") or {}).items()
                       if k not in SKIPPED_ANNOTATIONS}
        annotations.update({REVISION: str(revision),
                            "deployment.kubernetes.io/desired-replicas": str(d["spec"]["replicas"])})
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{d['metadata']['name']}-{pod_hash}",
                           "namespace": d["metadata"]["namespace"],
                           "labels": dict(template["metadata"]["labels"]),
                           "annotations": annotations,
                           "ownerReferences": [owner_ref(d, "apps/v1")]},
              "spec": {"replicas": 0, "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                       "selector": selector, "template": template}}
        return self.store.create(REPLICASETS, rs, actor="controller")

    def _bump_revision(self, rs: dict[str, Any], revision: int) -> dict[str, Any]:
        updated = clone(rs)
        annotations = updated["metadata"].setdefault("annotations", {})
        old = annotations.get(REVISION)
        history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h] + [old]
        annotations[REVISION_HISTORY] = ",".join(h for h in history if h)
        annotations[REVISION] = str(revision)
        return self.store.update(REPLICASETS, updated, actor="controller", audited=False)

    def _scale(self, d: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        old = int(rs["spec"].get("replicas", 0))
        if old == replicas:
            return rs
        updated = clone(rs)
        updated["spec"]["replicas"] = replicas
        updated["metadata"].setdefault("annotations", {})[
            "deployment.kubernetes.io/desired-replicas"] = str(d["spec"]["replicas"])
        result = self.store.update(REPLICASETS, updated, actor="controller", action="scale")
        direction = "up" if replicas > old else "down"
        self._event(d, "ScalingReplicaSet", f"Scaled {direction} replica set "
                    f"{rs['metadata']['name']} from {old} to {replicas}")
        return result

    def _rolling(self, d: dict[str, Any], new_rs: dict[str, Any],
                 olds: list[dict[str, Any]]) -> None:
        desired = int(d["spec"]["replicas"])
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), desired, True)
        unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), desired, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_count = int(new_rs["spec"].get("replicas", 0))
        total = new_count + sum(int(rs["spec"].get("replicas", 0)) for rs in olds)
        if new_count > desired:
            new_rs = self._scale(d, new_rs, desired)
        elif new_count < desired and total < desired + surge:
            new_rs = self._scale(d, new_rs, min(desired, new_count + desired + surge - total))
        # Scale old ReplicaSets down while keeping desired - maxUnavailable available:
        # first their unhealthy pods, then healthy ones as new ones become ready.
        min_available = desired - unavailable
        _, new_ready = self._counts(new_rs)
        all_count = sum(int(rs["spec"].get("replicas", 0)) for rs in [new_rs, *olds])
        budget = all_count - min_available - (int(new_rs["spec"]["replicas"]) - new_ready)
        scaled: list[dict[str, Any]] = []
        for rs in olds:
            replicas = int(rs["spec"].get("replicas", 0))
            _, ready = self._counts(rs)
            remove = max(0, min(budget, replicas - ready))
            budget -= remove
            scaled.append(self._scale(d, rs, replicas - remove) if remove else rs)
        available = new_ready + sum(self._counts(rs)[1] for rs in scaled)
        can_remove = available - min_available
        for rs in scaled:
            if can_remove <= 0:
                break
            replicas = int(rs["spec"].get("replicas", 0))
            remove = min(replicas, can_remove)
            if remove:
                self._scale(d, rs, replicas - remove)
                can_remove -= remove

    def _recreate(self, d: dict[str, Any], new_rs: dict[str, Any],
                  olds: list[dict[str, Any]]) -> None:
        for rs in olds:
            self._scale(d, rs, 0)
        if all(self._counts(rs)[0] == 0 for rs in olds):
            self._scale(d, new_rs, int(d["spec"]["replicas"]))

    def _cleanup_history(self, d: dict[str, Any], olds: list[dict[str, Any]]) -> None:
        limit = int(d["spec"].get("revisionHistoryLimit", 10))
        current = (self.store.find(REPLICASETS, rs["metadata"]["namespace"],
                                   rs["metadata"]["name"]) for rs in olds)
        idle = [rs for rs, now_rs in zip(olds, current) if now_rs is not None
                and int(now_rs["spec"].get("replicas", 0)) == 0 and self._counts(rs)[0] == 0]
        for rs in sorted(idle, key=revision_of)[: max(0, len(idle) - limit)]:
            self.store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"],
                              actor="controller")

    def _event(self, d: dict[str, Any], reason: str, message: str) -> None:
        meta = d["metadata"]
        stamp = now_rfc3339()
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                 "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": meta["name"], "namespace": meta["namespace"],
                                    "uid": meta["uid"]},
                 "reason": reason, "message": message, "type": "Normal", "count": 1,
                 "source": {"component": "deployment-controller"},
                 "firstTimestamp": stamp, "lastTimestamp": stamp,
                 "reportingComponent": "deployment-controller"}
        self.store.create(EVENTS, event, actor="controller", audited=False)
        # Keep the newest events only, as the apiserver's event TTL would.
        events = self.store.iter(EVENTS, meta["namespace"])
        for old in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))[
                : max(0, len(events) - MAX_EVENTS_PER_NAMESPACE)]:
            self.store.delete(EVENTS, meta["namespace"], old["metadata"]["name"],
                              actor="controller", audited=False)

    # -- status ----------------------------------------------------------------------

    def sync_status(self, namespace: str, name: str, now: float) -> float | None:
        """Update the status; returns when it may next change without any write (the
        progress deadline of an incomplete rollout), or None."""
        d = self.store.find(DEPLOYMENTS, namespace, name)
        if d is None:
            return None
        desired = int(d["spec"]["replicas"])
        rses = self.replicasets_of(d)
        template = _without_hash(d["spec"]["template"])
        new_rs = next((rs for rs in rses if _without_hash(rs["spec"]["template"]) == template),
                      None)
        replicas, ready, updated = self._totals(rses, new_rs)
        rolling = (d["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = resolve_int_or_percent(rolling.get("maxUnavailable", "25%"),
                                                 desired, False)
        old = d.get("status") or {}
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, desired - ready),
        }
        status = {k: v for k, v in status.items() if v}
        sim = self.store.sim["deployments"].setdefault(d["metadata"]["uid"], {})
        rs_name = new_rs["metadata"]["name"] if new_rs else name
        complete = updated == desired and replicas == desired and ready == desired
        progressed = any(status.get(k, 0) > old.get(k, 0) for k in
                         ("updatedReplicas", "readyReplicas", "availableReplicas")) or (
            status.get("replicas", 0) < old.get("replicas", 0) and not complete)
        if complete and new_rs is not None:
            sim.update(reason="NewReplicaSetAvailable", status="True",
                       message=f'ReplicaSet "{rs_name}" has successfully progressed.')
            if sim.get("reported") != "NewReplicaSetAvailable":
                sim["last_progress"] = now
        elif progressed:
            sim.update(reason="ReplicaSetUpdated", status="True", last_progress=now,
                       message=f'ReplicaSet "{rs_name}" is progressing.')
        elif sim.get("reason") == "NewReplicaSetAvailable" and not complete:
            # Scaled or changed after completing: progress starts again from now.
            sim.update(reason="ReplicaSetUpdated", status="True", last_progress=now,
                       message=f'ReplicaSet "{rs_name}" is progressing.')
        deadline = float(d["spec"].get("progressDeadlineSeconds", 600)) * \
            self.settings.progress_deadline_scale
        if not complete and now - float(sim.get("last_progress", now)) > deadline:
            sim.update(reason="ProgressDeadlineExceeded", status="False",
                       message=f'ReplicaSet "{rs_name}" has timed out progressing.')
        sim["reported"] = sim.get("reason")
        status["conditions"] = self._conditions(old, sim, ready >= desired - max_unavailable,
                                                now)
        if old != status:
            # Shallow is enough: the store copies what it is given before using it.
            self.store.update(DEPLOYMENTS, {**d, "status": status}, subresource="status",
                              actor="controller", audited=False, copy_back=False)
        if "last_progress" not in sim:  # e.g. paused from the start: Progressing's
            return math.floor(now) + 1.0  # lastUpdateTime shows the clock, to the second
        if complete or sim.get("reason") == "ProgressDeadlineExceeded":
            return None
        return float(sim["last_progress"]) + deadline

    def _conditions(self, old: dict[str, Any], sim: dict[str, Any], available: bool,
                    now: float) -> list[dict[str, Any]]:
        previous = {c["type"]: c for c in old.get("conditions") or []}
        wanted = [
            ("Available", "True" if available else "False",
             "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability.", None),
            ("Progressing", sim.get("status", "True"), sim.get("reason", "NewReplicaSetCreated"),
             sim.get("message", ""), sim.get("last_progress", now)),
        ]
        conditions = []
        for ctype, status, reason, message, updated_at in wanted:
            prev = previous.get(ctype)
            same = prev is not None and prev["status"] == status
            same_reason = same and prev["reason"] == reason and prev["message"] == message
            stamp = now_rfc3339(updated_at) if updated_at is not None else now_rfc3339(now)
            conditions.append({
                "type": ctype, "status": status, "reason": reason, "message": message,
                "lastUpdateTime": prev["lastUpdateTime"] if same_reason and (
                    updated_at is None or prev["lastUpdateTime"] == stamp) else stamp,
                "lastTransitionTime": prev["lastTransitionTime"] if same else now_rfc3339(now),
            })
        return conditions


__all__ = ["Controller", "DEPLOYMENTS", "PODS", "REPLICASETS", "REVISION", "template_hash"]
