"""batch/v1 in the stand-in: the CronJob controller (schedules, concurrencyPolicy, history
limits, suspend) and the Job controller with a simulated kubelet for run-to-completion
pods, plus PersistentVolumeClaims that bind at once.

A Job pod pulls its image like any pod (a missing image stays in ImagePullBackOff); an
image labelled `io.kepler.sandbox.crash=true` runs, then fails with exit code 1, else it
succeeds; a release hook's pod (label `kepler.dev/hook`: pre_deploy, post_deploy, undo) fails
when its image is labelled `io.kepler.sandbox.hook.<kind>=fail` (kepler-sandbox.yaml
`hooks: {pre_deploy: fail}`). Each run takes `seconds_per_replica * 3` of wall time. A Job fails when its
failed pods exceed `backoffLimit` or it outlives `activeDeadlineSeconds`.
"""

from __future__ import annotations

import copy
import random
import string
from datetime import datetime, timezone
from typing import Any

from sandbox.kubernetes import cron
from sandbox.kubernetes.images import ImageResolver, failing_hook
from sandbox.kubernetes.pods import PODS, owned_by, owner_ref, pull_images
from sandbox.kubernetes.queue import WorkQueue
from sandbox.kubernetes.resources import resource_for_kind
from sandbox.kubernetes.store import Store, now_rfc3339, parse_rfc3339

CRONJOBS = resource_for_kind("CronJob")
JOBS = resource_for_kind("Job")
PVCS = resource_for_kind("PersistentVolumeClaim")
JOB_NAME = "batch.kubernetes.io/job-name"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TERMINAL = ("succeeded", "failed")


def job_condition(job: dict[str, Any]) -> str | None:
    """'Complete', 'Failed' or None while the Job runs."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def job_from_template(cronjob: dict[str, Any], name: str,
                      annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Job from a CronJob's jobTemplate, owned by the CronJob (what the controller and
    `kubectl create job --from=cronjob/...` make)."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    meta = template.get("metadata") or {}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": cronjob["metadata"]["namespace"],
                         "labels": {**(meta.get("labels") or {})},
                         "annotations": {**(meta.get("annotations") or {}), **(annotations or {})},
                         "ownerReferences": [owner_ref(cronjob, "batch/v1")]},
            "spec": template.get("spec") or {}}


class BatchController:
    def __init__(self, store: Store, images: ImageResolver, seconds_per_replica: float) -> None:
        self.store = store
        self.images = images
        self.run_seconds = max(0.2, seconds_per_replica * 3)
        self.start_seconds = seconds_per_replica
        self.store.sim.setdefault("pods", {})
        self.store.sim.setdefault("cronjobs", {})
        self.queue = WorkQueue(store, (PVCS, CRONJOBS, JOBS))

    def tick(self, now: float) -> None:
        """Reconcile what may have changed (see sandbox/kubernetes/queue.py)."""
        self.queue.run(now, self._reconcile)

    def _reconcile(self, due: set[str], now: float) -> None:
        queue, objects = self.queue, self.store.objects
        for key in queue.ordered(PVCS, due):
            pvc = objects[key]
            if (pvc.get("status") or {}).get("phase") != "Bound":
                self._bind(pvc)
        for key in queue.ordered(CRONJOBS, due):
            if key in objects:
                self.sync_cronjob(objects[key], now)
                queue.wake(key, (now // 60 + 1) * 60)  # the next scheduled minute, maybe
        # `queue.marked` holds what this tick wrote so far: e.g. a Job a CronJob started.
        for key in queue.ordered(JOBS, due | queue.marked):
            if key in objects:
                queue.wake(key, self.sync_job(objects[key], now))

    def _bind(self, pvc: dict[str, Any]) -> None:
        spec = pvc.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        updated = copy.deepcopy(pvc)
        updated["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes") or
                             ["ReadWriteOnce"], "capacity": {"storage": storage}}
        self.store.update(PVCS, updated, subresource="status", actor="controller", audited=False)

    # -- CronJob -------------------------------------------------------------------------

    def due(self, cj: dict[str, Any], now: float) -> list[int]:
        """Scheduled minutes (epoch minutes) since the last check, oldest first; at most the
        last one, as the controller starts only the most recent missed run."""
        sim = self.store.sim["cronjobs"].setdefault(cj["metadata"]["uid"], {})
        minute = int(now // 60)
        last = int(sim.get("checked", minute))
        sim["checked"] = minute
        schedule = (cj.get("spec") or {}).get("schedule", "")
        hits = [m for m in range(max(last + 1, minute - 60), minute + 1)
                if cron.matches(schedule, datetime.fromtimestamp(m * 60, timezone.utc))]
        return hits[-1:]

    def jobs_of(self, cj: dict[str, Any]) -> list[dict[str, Any]]:
        uid = cj["metadata"]["uid"]
        return [j for j in self.store.owned(JOBS, cj["metadata"]["namespace"], uid)
                if owned_by(j, uid)]

    def sync_cronjob(self, cj: dict[str, Any], now: float) -> None:
        spec = cj.get("spec") or {}
        due = self.due(cj, now)
        jobs = self.jobs_of(cj)
        active = [j for j in jobs if job_condition(j) is None]
        if due and not spec.get("suspend"):
            policy = spec.get("concurrencyPolicy", "Allow")
            if active and policy == "Forbid":
                due = []
            elif active and policy == "Replace":
                for j in active:
                    self.store.delete(JOBS, j["metadata"]["namespace"], j["metadata"]["name"],
                                      actor="cronjob-controller")
                active = []
            for minute in due:
                name = f"{cj['metadata']['name']}-{minute}"
                if self.store.find(JOBS, cj["metadata"]["namespace"], name) is None:
                    job = job_from_template(cj, name, {SCHEDULED_AT: now_rfc3339(minute * 60)})
                    active.append(self.store.create(JOBS, job, actor="cronjob-controller"))
        self._cleanup(cj, jobs)
        status: dict[str, Any] = dict(cj.get("status") or {})
        status["active"] = [{"kind": "Job", "namespace": j["metadata"]["namespace"],
                             "name": j["metadata"]["name"], "uid": j["metadata"]["uid"],
                             "apiVersion": "batch/v1"} for j in active
                            if self.store.find(JOBS, j["metadata"]["namespace"], j["metadata"]["name"])]
        if not status["active"]:
            status.pop("active")
        if due:
            status["lastScheduleTime"] = now_rfc3339(due[-1] * 60)
        done = [j for j in jobs if job_condition(j) == "Complete"]
        if done:
            status["lastSuccessfulTime"] = max(
                (j.get("status") or {}).get("completionTime", "") for j in done)
        if status != (cj.get("status") or {}):
            updated = copy.deepcopy(cj)
            updated["status"] = status
            self.store.update(CRONJOBS, updated, subresource="status", actor="controller",
                              audited=False)

    def _cleanup(self, cj: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        spec = cj.get("spec") or {}
        for kind, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                            ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            finished = sorted((j for j in jobs if job_condition(j) == kind),
                              key=lambda j: int(j["metadata"]["resourceVersion"]))
            for j in finished[: max(0, len(finished) - int(limit))]:
                if self.store.find(JOBS, j["metadata"]["namespace"], j["metadata"]["name"]):
                    self.store.delete(JOBS, j["metadata"]["namespace"], j["metadata"]["name"],
                                      actor="cronjob-controller")

    # -- Job -----------------------------------------------------------------------------

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.store.owned(PODS, job["metadata"]["namespace"], uid)
                if owned_by(p, uid)]

    def sync_job(self, job: dict[str, Any], now: float) -> float | None:
        """Sync its pods and status; returns when it may next change with no write (a pod's
        next state, the active deadline), or None."""
        spec = job.get("spec") or {}
        pods = self.pods_of(job)
        wakes = [self.sync_pod(pod, now) for pod in pods]
        states = [self.store.sim["pods"].get(p["metadata"]["uid"], {}).get("state") for p in pods]
        succeeded, failed = states.count("succeeded"), states.count("failed")
        active = len(states) - succeeded - failed
        status: dict[str, Any] = dict(job.get("status") or {})
        status.setdefault("startTime", now_rfc3339(now))
        condition = job_condition(job)
        if condition is None:
            started = parse_rfc3339(status["startTime"])
            deadline = spec.get("activeDeadlineSeconds")
            if succeeded >= int(spec.get("completions", 1)):
                condition, reason, message = "Complete", "Completed", "Job completed"
            elif failed > int(spec.get("backoffLimit", 6)):
                condition, reason, message = ("Failed", "BackoffLimitExceeded",
                                              "Job has reached the specified backoff limit")
            elif deadline is not None and now - started > float(deadline):
                condition, reason, message = ("Failed", "DeadlineExceeded",
                                              "Job was active longer than specified deadline")
            elif active == 0 and not spec.get("suspend"):
                self._create_pod(job, now)
                active = 1
            if condition is not None:
                for pod in pods:
                    if self.store.sim["pods"].get(pod["metadata"]["uid"], {}).get("state") not in TERMINAL:
                        self.store.delete(PODS, pod["metadata"]["namespace"],
                                          pod["metadata"]["name"], actor="job-controller",
                                          audited=False)
                        active -= 1
                stamp = now_rfc3339(now)
                status["conditions"] = [{"type": condition, "status": "True", "reason": reason,
                                         "message": message, "lastProbeTime": stamp,
                                         "lastTransitionTime": stamp}]
                if condition == "Complete":
                    status["completionTime"] = stamp
        for key, value in (("active", active), ("succeeded", succeeded), ("failed", failed)):
            if value > 0:
                status[key] = value
            else:
                status.pop(key, None)
        status["ready"] = sum(1 for s in states if s == "running")
        if status != (job.get("status") or {}):
            updated = copy.deepcopy(job)
            updated["status"] = status
            self.store.update(JOBS, updated, subresource="status", actor="controller",
                              audited=False)
        if condition is None and spec.get("activeDeadlineSeconds") is not None:
            wakes.append(parse_rfc3339(status["startTime"]) +
                         float(spec["activeDeadlineSeconds"]))
        return min((w for w in wakes if w is not None), default=None)

    def _create_pod(self, job: dict[str, Any], now: float) -> None:
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        meta = template.get("metadata") or {}
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        labels = {**(meta.get("labels") or {}), JOB_NAME: job["metadata"]["name"],
                  CONTROLLER_UID: job["metadata"]["uid"], "job-name": job["metadata"]["name"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{job['metadata']['name']}-{suffix}",
                            "namespace": job["metadata"]["namespace"], "labels": labels,
                            "annotations": meta.get("annotations") or {},
                            "ownerReferences": [owner_ref(job, "batch/v1")]},
               "spec": {**(template.get("spec") or {}), "nodeName": "sandbox-node"}}
        created = self.store.create(PODS, pod, actor="job-controller", audited=False)
        self.store.sim["pods"][created["metadata"]["uid"]] = {
            "state": "pending", "created": now, "job": job["metadata"]["uid"]}

    def sync_pod(self, pod: dict[str, Any], now: float) -> float | None:
        """Advance a Job pod; returns when it may next change by itself, or None."""
        sim = self.store.sim["pods"].setdefault(pod["metadata"]["uid"],
                                                {"state": "pending", "created": now, "job": ""})
        if sim["state"] in ("pending", "missing"):
            infos = pull_images(self.images, pod, sim)
            if infos is not None:
                hook = failing_hook(pod, sim.get("labels") or {})
                sim["outcome"] = "failed" if hook or any(i.crashes for i in infos) else "succeeded"
                sim["state"], sim["started"] = "running", now + self.start_seconds
                sim["finished"] = sim["started"] + self.run_seconds
        elif sim["state"] == "running" and now >= float(sim["finished"]):
            sim["state"] = sim["outcome"]
        status = self._pod_status(pod, sim, now)
        if pod.get("status") != status:
            updated = copy.deepcopy(pod)
            updated["status"] = status
            self.store.update(PODS, updated, subresource="status", actor="kubelet",
                              audited=False)
        if sim["state"] in ("pending", "missing"):
            return now  # ask the image resolver again on the next tick
        if sim["state"] == "running":
            return float(sim["started"]) if now < float(sim["started"]) else float(
                sim["finished"])
        return None

    @staticmethod
    def _pod_status(pod: dict[str, Any], sim: dict[str, Any], now: float) -> dict[str, Any]:
        state = sim["state"]
        statuses = []
        for n, c in enumerate(pod["spec"].get("containers") or []):
            cs: dict[str, Any] = {"name": c["name"], "image": c["image"], "imageID": "",
                                  "ready": state == "running", "restartCount": 0}
            digests = sim.get("digests") or []
            if n < len(digests) and digests[n]:
                cs["imageID"] = f"{c['image'].split('@')[0]}@{digests[n]}"
            if state == "missing":
                cs["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{c["image"]}": '
                                                      f'{sim.get("message", "")}'}}
            elif state == "running" and now >= float(sim["started"]):
                cs["state"] = {"running": {"startedAt": now_rfc3339(sim["started"])}}
            elif state in TERMINAL:
                failed = state == "failed"
                cs["state"] = {"terminated": {
                    "exitCode": 1 if failed else 0, "reason": "Error" if failed else "Completed",
                    "startedAt": now_rfc3339(sim["started"]),
                    "finishedAt": now_rfc3339(sim["finished"])}}
            else:
                cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            statuses.append(cs)
        phase = {"succeeded": "Succeeded", "failed": "Failed"}.get(state, "Running" if (
            state == "running" and now >= float(sim.get("started", now))) else "Pending")
        return {"phase": phase, "hostIP": "10.0.0.1",
                "startTime": pod["metadata"].get("creationTimestamp"),
                "containerStatuses": statuses, "qosClass": "BestEffort"}
