"""The bridge between the sandbox world and a real cluster (RealCluster(stages="sandbox")).

It watches the real API server and does, for the real cluster, what the stand-in's simulated
kubelet and traffic do for the stand-in:

- judges each new pod by its images' registry labels, with the stand-in's resolver
  (sandbox/kubernetes/images.py), and marks it: the label sandbox.kepler.dev/behaviour
  (ok | unready | crash | missing) and the times kwok's stages (stages.yaml) play it at. The
  real controllers then make the real conditions from what kwok plays: a Deployment whose pods
  crash or cannot pull never becomes Available and ends in ProgressDeadlineExceeded.
  Readiness is paced as in the stand-in: a pod is ready `seconds_per_replica` after the
  previous pod of the same owner. A missing image is looked up again every second, so pushing
  it later heals the pod.
- mirrors pods, Services, ReplicaSets, VirtualServices and DestinationRules (list + watch,
  mirror.py) into a stand-in Store, keeps each pod's simulation state (what the stand-in's
  kubelet would hold: ready or not, its image labels) from the pod's real status, and runs the
  stand-in's traffic simulation over it. The sandbox's Prometheus reads it through
  `world.components["kubernetes"]`, as it reads the stand-in's.
- writes the pods' simulated logs where kwok serves them from (podlogs.py).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Coroutine

from sandbox.kubernetes.images import (RECHECK_MISSING_S, RECHECK_TAG_S, ImageInfo, ImageResolver,
                                       failing_hook, parse_image)
from sandbox.kubernetes.pods import PODS, REPLICASETS, Kubelet
from sandbox.kubernetes.traffic import DESTINATION_RULES, SERVICES, VIRTUAL_SERVICES, Traffic
from sandbox.world import World

from .kubeapi import ApiStatusError, KubeApi, resource_path
from .mirror import Mirror, MirrorStore
from .podlogs import PodLogFiles

log = logging.getLogger(__name__)

BEHAVIOUR = "sandbox.kepler.dev/behaviour"
READY_AT = "sandbox.kepler.dev/ready-at"
FINISH_AT = "sandbox.kepler.dev/finish-at"
RESTART_EVERY = "sandbox.kepler.dev/restart-every"
NUDGED = "sandbox.kepler.dev/nudged"  # how often the bridge had kwok look at a pod again
NUDGE_AFTER_S = 10.0  # a pod still Pending this long after its ready-at
MESSAGE = "sandbox.kepler.dev/message"
MIRRORED = (PODS, SERVICES, REPLICASETS, VIRTUAL_SERVICES, DESTINATION_RULES)
TICK_S = 0.25
RECHECK_S = 1.0  # pods not judged yet (a registry that timed out) and missing images
PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff"}


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def judge(infos: list[ImageInfo]) -> str | None:
    """What a pod with these images does (a behaviour of stages.yaml), or None while any image
    is still being looked up."""
    if any(i.state == "missing" for i in infos):
        return "missing"
    if not infos or any(i.state != "ok" for i in infos):
        return None
    if any(i.crashes for i in infos):
        return "crash"
    return "unready" if any(i.unready for i in infos) else "ok"


def is_job_pod(pod: dict[str, Any]) -> bool:
    return (pod.get("spec") or {}).get("restartPolicy", "Always") != "Always"


def _duration(text: str | None) -> float | None:
    """A Go duration as the bridge writes them ("5s", "1.5s")."""
    try:
        return float(text[:-1]) if text and text.endswith("s") and not text.endswith("ms") else None
    except ValueError:
        return None


def observe(pod: dict[str, Any], sim: dict[str, Any], now: float) -> None:
    """Bring a pod's simulation state (`store.sim["pods"][uid]`, what the stand-in's kubelet
    keeps and its traffic and logs read) up to the pod's real status."""
    meta, status = pod["metadata"], pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    states = [s.get("state") or {} for s in statuses]
    waiting = {(st.get("waiting") or {}).get("reason") for st in states}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    annotations = meta.get("annotations") or {}
    behaviour = (meta.get("labels") or {}).get(BEHAVIOUR)
    job = is_job_pod(pod)
    if job:
        sim["job"] = next((r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == "Job"),
                          meta["name"])
        finished = [parse_time((st.get("terminated") or {}).get("finishedAt")) for st in states]
        end = max((f for f in finished if f), default=None) or parse_time(annotations.get(FINISH_AT))
        if behaviour in ("ok", "unready", "crash") and end is not None:
            sim["outcome"] = "failed" if behaviour == "crash" else "succeeded"
            sim["finished"] = end
    if phase in ("Succeeded", "Failed"):
        state = phase.lower()
    elif phase == "Running" and (ready or job):
        state = "running"
    elif "CrashLoopBackOff" in waiting:
        state = "crash"
    elif phase == "Running":
        state = "unready"
    elif waiting & PULL_ERRORS:
        state = "missing"
    else:
        state = "pending"
    if state != sim.get("state"):
        started = [parse_time((st.get("running") or {}).get("startedAt")) for st in states]
        if state in ("running", "unready", "crash") or "started" not in sim:
            sim["started"] = min((s for s in started if s), default=now)
        sim["state"] = state
    every = _duration(annotations.get(RESTART_EVERY))
    if every:
        sim["restart_every"] = every


class Bridge:
    """One real cluster for one sandbox World. `run()` on the sandbox's event loop; `synced` is
    set once every mirrored resource has been listed."""

    def __init__(self, world: World, kubeconfig: Path | str, logs_dir: Path | None = None) -> None:
        settings = world.settings
        self.kubeconfig = Path(kubeconfig)
        self.api = KubeApi.from_kubeconfig(self.kubeconfig)
        self.store = MirrorStore()
        self.images = ImageResolver()
        self.spr = settings.seconds_per_replica
        # the stand-in's kubelet answers is_ready() from store.sim, which observe() keeps
        self.kubelet = Kubelet(self.store, self.images, self.spr)
        self.traffic = Traffic(self.store, self.kubelet, settings.traffic_rps)
        self.mirror = Mirror(self.api, self.store, MIRRORED)
        self.mirror.listeners.append(self._changed)
        if logs_dir is None:
            state = world.state_path("kubernetes-real")
            logs_dir = state / "logs" if state else Path(tempfile.mkdtemp(prefix="kepler-pod-logs-"))
        self.logs = PodLogFiles(self.api, logs_dir)
        self.marked = 0  # pods this bridge has marked (for tests and curious people)
        self._next_ready: dict[str, float] = {}  # owner uid -> when its next pod may be ready
        self._judging: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: dict[str, ImageInfo] = {}  # image -> its last lookup
        world.components["kubernetes"] = self

    @property
    def synced(self) -> asyncio.Event:
        return self.mirror.synced

    async def run(self) -> None:
        await asyncio.gather(self.mirror.run(), self._tick())

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.images.aclose()
        await self.api.aclose()

    # -- pods ----------------------------------------------------------------------------------

    def _sim(self, pod: dict[str, Any]) -> dict[str, Any]:
        sims: dict[str, Any] = self.store.sim["pods"]
        return sims.setdefault(pod["metadata"]["uid"], {"state": "pending", "created": time.time()})

    def _changed(self, kind: str, res: Any, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._next_ready.pop(obj["metadata"]["uid"], None)
            if res is PODS:
                self.logs.forget(obj)
            return
        if res is not PODS:
            return
        sim = self._sim(obj)
        observe(obj, sim, time.time())
        if self._needs_judging(obj, sim):
            self._spawn_judge(obj)

    def _needs_judging(self, pod: dict[str, Any], sim: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        mark = (meta.get("labels") or {}).get(BEHAVIOUR)
        return mark is None or "labels" not in sim

    def _spawn_judge(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._judging:
            return
        self._judging.add(uid)
        self._spawn(self._judge(pod))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, image: str) -> ImageInfo:
        """The registry's answer for `image`, looked up again as often as the stand-in's
        kubelet would (a tag may move; a missing image may be pushed)."""
        info = self._seen.get(image)
        if info is not None:
            age = time.monotonic() - info.checked
            if info.state == "ok" and (parse_image(image).by_digest or age < RECHECK_TAG_S):
                return info
            if info.state == "missing" and age < RECHECK_MISSING_S:
                return info
        info = await self.images.fetch(image)
        self._seen[image] = info
        return info

    async def _judge(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            infos = [await self._lookup(c["image"]) for c in pod["spec"].get("containers") or []]
            behaviour = judge(infos)
            if behaviour == "ok" and is_job_pod(pod) and failing_hook(
                    pod, {k: v for i in infos for k, v in i.labels.items()}):
                behaviour = "crash"  # a release hook the commit's kepler-sandbox.yaml fails
            current = self.store.find(PODS, meta["namespace"], meta["name"])
            if behaviour is None or current is None or current["metadata"]["uid"] != meta["uid"]:
                return  # still looking (the recheck asks again), or the pod is gone
            sim = self._sim(current)
            if behaviour != "missing":
                sim["labels"] = {k: v for i in infos for k, v in i.labels.items()}
                sim["digests"] = [i.digest for i in infos]
                self._touched(current)
            mark = (current["metadata"].get("labels") or {}).get(BEHAVIOUR)
            if mark is None or (mark == "missing" and behaviour != "missing"):
                message = next((i.message for i in infos if i.state == "missing"), "")
                await self._mark(current, behaviour, message)
        except ApiStatusError as e:
            if e.code != 404:  # a pod deleted meanwhile is no news
                log.warning("real cluster: marking pod %s/%s: %s", meta["namespace"], meta["name"], e)
        except Exception:
            log.exception("real cluster: judging pod %s/%s", meta["namespace"], meta["name"])
        finally:
            self._judging.discard(meta["uid"])

    def _touched(self, pod: dict[str, Any]) -> None:
        """Tell the store's readers (the traffic) that the pod's simulation state changed."""
        for hook in self.store.on_write:
            hook(PODS, pod, pod)

    async def _mark(self, pod: dict[str, Any], behaviour: str, message: str) -> None:
        meta = pod["metadata"]
        now = time.time()
        annotations: dict[str, str] = {}
        if behaviour == "missing":
            annotations[MESSAGE] = message
        elif is_job_pod(pod):  # as the stand-in's Job kubelet: starts after spr, runs 3 spr
            start = now + self.spr
            annotations[READY_AT] = rfc3339(start)
            annotations[FINISH_AT] = rfc3339(start + max(0.2, self.spr * 3))
        elif behaviour == "crash":
            annotations[RESTART_EVERY] = f"{max(1.0, self.spr * 5):g}s"
        else:
            owner = next((r["uid"] for r in meta.get("ownerReferences") or [] if r.get("controller")), meta["uid"])
            ready_at = max(now, self._next_ready.get(owner, 0.0)) + self.spr
            self._next_ready[owner] = ready_at
            annotations[READY_AT] = rfc3339(ready_at)
        patch = {"metadata": {"labels": {BEHAVIOUR: behaviour}, "annotations": annotations}}
        await self.api.patch(resource_path(PODS, meta["namespace"], meta["name"]), patch)
        self.marked += 1

    # -- the simulation's clock ----------------------------------------------------------------

    async def _tick(self) -> None:
        last_recheck = last_logs = 0.0
        while True:
            now = time.time()
            try:
                self.traffic.advance(now, settle=False)
                if now - last_recheck >= RECHECK_S:
                    last_recheck = now
                    self._recheck()
                if now - last_logs >= 1.0:
                    last_logs = now
                    await self._write_logs(now)
            except Exception:  # keep simulating; one bad object must not stop the world
                log.exception("real cluster bridge: tick failed")
            await asyncio.sleep(TICK_S)

    def _recheck(self) -> None:
        now = time.time()
        for pod in self.store.iter(PODS):
            meta = pod["metadata"]
            mark = (meta.get("labels") or {}).get(BEHAVIOUR)
            pending = (pod.get("status") or {}).get("phase", "Pending") == "Pending"
            if not pending or meta.get("deletionTimestamp"):
                continue
            if mark in (None, "missing") or "labels" not in self._sim(pod):
                self._spawn_judge(pod)
            elif (pod.get("spec") or {}).get("nodeName") and self._overdue(pod, now):
                self._spawn(self._nudge(pod))

    @staticmethod
    def _overdue(pod: dict[str, Any], now: float) -> bool:
        annotations = pod["metadata"].get("annotations") or {}
        ready_at = parse_time(annotations.get(READY_AT))
        nudged = int(annotations.get(NUDGED, "0") or 0)
        return ready_at is not None and now > ready_at + NUDGE_AFTER_S * (nudged + 1)

    async def _nudge(self, pod: dict[str, Any]) -> None:
        """kwok plays a stage when it sees a change to the pod; one it has not played past its
        time (a missed event, seen under a loaded machine) is changed again, and logged."""
        meta = pod["metadata"]
        count = int((meta.get("annotations") or {}).get(NUDGED, "0") or 0) + 1
        log.warning("real cluster: pod %s/%s still %s %.0f s after its ready-at; nudging kwok (%d)",
                    meta["namespace"], meta["name"], (pod.get("status") or {}).get("phase"),
                    time.time() - (parse_time((meta.get("annotations") or {}).get(READY_AT)) or 0), count)
        try:
            await self.api.patch(resource_path(PODS, meta["namespace"], meta["name"]),
                                 {"metadata": {"annotations": {NUDGED: str(count)}}})
        except ApiStatusError as e:
            if e.code != 404:
                log.warning("real cluster: nudging pod %s/%s: %s", meta["namespace"], meta["name"], e)

    async def _write_logs(self, now: float) -> None:
        sims = self.store.sim["pods"]
        for pod in list(self.store.iter(PODS)):
            sim = sims.get(pod["metadata"]["uid"])
            if sim is None or not self.logs.enabled:
                continue
            try:
                await self.logs.write(pod, sim, now)
            except (ApiStatusError, OSError) as e:
                log.debug("real cluster: logs of %s: %s", pod["metadata"]["name"], e)

