"""The ReplicaSet controller and a simulated kubelet.

A ReplicaSet gets as many Pod objects as it wants replicas. A pod whose images
all pull becomes ready `seconds_per_replica` after its predecessor in the same
ReplicaSet (replicas come up one after another); an image the registry does not
have leaves it in ImagePullBackOff (retried, so pushing the image later heals it);
an image labelled to crash leaves it in CrashLoopBackOff. Per-pod simulation
state lives in `store.sim["pods"]` keyed by uid, with wall-clock times, so a
restarted sandbox resumes where it was.
"""

from __future__ import annotations

import random
import string
import time
from typing import Any

from sandbox.kubernetes.images import ImageInfo, ImageResolver
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.store import Store, now_rfc3339, clone

PODS = resource_for_kind("Pod")
REPLICASETS = resource_for_kind("ReplicaSet")


def pull_images(images: ImageResolver, pod: dict[str, Any],
                sim: dict[str, Any]) -> list[ImageInfo] | None:
    """The kubelet's image pull for a pod not started yet: an image the registry does not
    have makes `sim` "missing"; once every image resolves, their labels and digests go
    into `sim` and they are returned. None while any is missing or still being looked up."""
    infos = [images.lookup(c["image"]) for c in pod["spec"].get("containers") or []]
    if any(i.state == "missing" for i in infos):
        sim["state"] = "missing"
        sim["message"] = next(i.message for i in infos if i.state == "missing")
        return None
    if infos and all(i.state == "ok" for i in infos):
        sim["labels"] = {k: v for i in infos for k, v in i.labels.items()}
        sim["digests"] = [i.digest for i in infos]
        return infos
    return None


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid and r.get("controller")
               for r in obj["metadata"].get("ownerReferences") or [])


def owner_ref(owner: dict[str, Any], api_version: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


class Kubelet:
    def __init__(self, store: Store, images: ImageResolver, seconds_per_replica: float) -> None:
        self.store = store
        self.images = images
        self.spr = seconds_per_replica
        self.store.sim.setdefault("pods", {})
        self.store.sim.setdefault("rs_next_ready", {})
        store.on_delete.append(self._forget)

    def _forget(self, res: Any, obj: dict[str, Any]) -> None:
        if res is PODS:
            self.store.sim["pods"].pop(obj["metadata"]["uid"], None)
        elif res is REPLICASETS:
            self.store.sim["rs_next_ready"].pop(obj["metadata"]["uid"], None)

    # -- ReplicaSet controller -----------------------------------------------------

    def pods_of(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        uid = rs["metadata"]["uid"]
        return [p for p in self.store.owned(PODS, rs["metadata"]["namespace"], uid)
                if owned_by(p, uid)]

    def is_ready(self, pod: dict[str, Any]) -> bool:
        return self.store.sim["pods"].get(pod["metadata"]["uid"], {}).get("state") == "running"

    def sync_replicaset(self, rs: dict[str, Any], now: float) -> float | None:
        """Sync its pods and status; returns when a pod may next change by itself (see
        `sync_pod`), or None."""
        want = int((rs.get("spec") or {}).get("replicas", 0))
        pods = self.pods_of(rs)
        for _ in range(want - len(pods)):
            self._create_pod(rs)
        if len(pods) > want:
            # Delete not-ready pods first, then the newest, as the real controller ranks them.
            ranked = sorted(pods, key=lambda p: (self.is_ready(p), -self._created(p)))
            for pod in ranked[: len(pods) - want]:
                meta = pod["metadata"]
                self.store.delete(PODS, meta["namespace"], meta["name"], actor="controller",
                                  audited=False)
        wakes = [self.sync_pod(pod, rs, now) for pod in self.pods_of(rs)]
        self._rs_status(rs)
        return min((w for w in wakes if w is not None), default=None)

    def _created(self, pod: dict[str, Any]) -> float:
        return float(self.store.sim["pods"].get(pod["metadata"]["uid"], {}).get("created", 0))

    def _create_pod(self, rs: dict[str, Any]) -> None:
        template = clone((rs.get("spec") or {}).get("template") or {})
        meta = template.get("metadata") or {}
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{rs['metadata']['name']}-{suffix}",
                            "namespace": rs["metadata"]["namespace"],
                            "labels": meta.get("labels") or {},
                            "annotations": meta.get("annotations") or {},
                            "ownerReferences": [owner_ref(rs, "apps/v1")]},
               "spec": {**(template.get("spec") or {}), "nodeName": "sandbox-node"}}
        created = self.store.create(PODS, pod, actor="controller", audited=False, copy_back=False)
        self.store.sim["pods"][created["metadata"]["uid"]] = {
            "state": "pending", "created": time.time(), "rs": rs["metadata"]["uid"]}

    def _rs_status(self, rs: dict[str, Any]) -> None:
        pods = self.pods_of(rs)
        ready = sum(1 for p in pods if self.is_ready(p))
        status: dict[str, Any] = {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                                  "readyReplicas": ready, "availableReplicas": ready,
                                  "observedGeneration": rs["metadata"].get("generation", 1)}
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        if rs.get("status") != status:
            # Shallow is enough: the store copies what it is given before using it.
            self.store.update(REPLICASETS, {**rs, "status": status}, subresource="status",
                              actor="controller", audited=False, copy_back=False)

    # -- kubelet ---------------------------------------------------------------------

    def sync_pod(self, pod: dict[str, Any], rs: dict[str, Any] | None,
                 now: float) -> float | None:
        """Advance the pod's simulated state and status; returns when it may next change
        with no write to look at it again (None: not before something is written)."""
        uid = pod["metadata"]["uid"]
        sim = self.store.sim["pods"].setdefault(uid, {"state": "pending", "created": now})
        if sim["state"] in ("pending", "missing"):
            infos = pull_images(self.images, pod, sim)
            if infos is not None:
                if any(i.crashes for i in infos):
                    sim["state"] = "crash"
                    sim["started"] = now
                else:
                    rs_uid = (rs or {}).get("metadata", {}).get("uid", uid)
                    queue = self.store.sim["rs_next_ready"]
                    ready_at = max(now, float(queue.get(rs_uid, 0))) + self.spr
                    queue[rs_uid] = ready_at
                    sim["state"], sim["ready_at"] = "starting", ready_at
                    sim["unready"] = any(i.unready for i in infos)
        if sim["state"] == "starting" and now >= float(sim["ready_at"]):
            sim["state"], sim["started"] = ("unready" if sim.get("unready") else "running"), now
        status = self._pod_status(pod, sim, now)
        if pod.get("status") != status:
            self.store.update(PODS, {**pod, "status": status}, subresource="status",
                              actor="kubelet", audited=False, copy_back=False)
        return self._next_change(sim, now)

    def _next_change(self, sim: dict[str, Any], now: float) -> float | None:
        state = sim["state"]
        if state in ("pending", "missing"):
            return now  # ask the image resolver again on the next tick (it rate-limits)
        if state == "starting":
            return float(sim["ready_at"])
        if state == "crash":  # the restart count grows every `period`
            period = max(1.0, self.spr * 5)
            started = float(sim["started"])
            return started + (int((now - started) / period) + 1) * period
        return None

    def _pod_status(self, pod: dict[str, Any], sim: dict[str, Any], now: float) -> dict[str, Any]:
        state = sim["state"]
        created = pod["metadata"].get("creationTimestamp")
        ready = state == "running"
        statuses = []
        for n, c in enumerate(pod["spec"].get("containers") or []):
            cs: dict[str, Any] = {"name": c["name"], "image": c["image"], "imageID": "",
                                  "ready": ready, "started": ready, "restartCount": 0}
            digests = sim.get("digests") or []
            if n < len(digests) and digests[n]:
                cs["imageID"] = f"{c['image'].split('@')[0]}@{digests[n]}"
            if state in ("running", "crash", "unready"):
                cs["containerID"] = f"containerd://{pod['metadata']['uid'].replace('-', '')}{n}"
            if state in ("running", "unready"):  # unready: started, its probe never passes
                cs["state"] = {"running": {"startedAt": now_rfc3339(sim["started"])}}
                cs["started"] = True
            elif state == "missing":
                cs["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{c["image"]}": '
                                                      f'{sim.get("message", "")}'}}
            elif state == "crash":
                # Restarts back off like the kubelet's, in sandbox time.
                restarts = 1 + int((now - float(sim["started"])) / max(1.0, self.spr * 5))
                cs["restartCount"] = restarts
                cs["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": f"back-off restarting failed container "
                                                      f"{c['name']} in pod "
                                                      f"{pod['metadata']['name']}"}}
                cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
            else:
                cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append(cs)
        phase = "Running" if state in ("running", "crash", "unready") else "Pending"
        cond = "True" if ready else "False"
        conditions = [{"type": t, "status": s, "lastProbeTime": None,
                       "lastTransitionTime": created}
                      for t, s in (("PodScheduled", "True"), ("Initialized", "True"),
                                   ("ContainersReady", cond), ("Ready", cond))]
        status: dict[str, Any] = {"phase": phase, "conditions": conditions,
                                  "hostIP": "10.0.0.1", "startTime": created,
                                  "containerStatuses": statuses, "qosClass": "BestEffort"}
        if state in ("running", "crash", "starting", "unready"):
            status["podIP"] = _pod_ip(pod["metadata"]["uid"])
            status["podIPs"] = [{"ip": status["podIP"]}]
        return status


def _pod_ip(uid: str) -> str:
    n = int(uid.replace("-", "")[:6], 16)
    return f"10.244.{(n >> 8) % 256}.{n % 254 + 1}"
