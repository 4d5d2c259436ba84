"""Cronjob services: release a CronJob's pod template by digest (release.py, the same
path as a Deployment's), run it once now as a Job and wait for the verdict, stop a run.

Same rules as the other Kubernetes activities: writes read first and retry a 409 with
a fresh read; each activity is idempotent; what a retry cannot fix is non-retryable.
"""

from __future__ import annotations

import time

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.errors import non_retryable
from activities.kubernetes.client import Cluster
from activities.kubernetes.release import CRONJOB, ReleaseActivities, cannot_start
from kepler import manifests, naming
from kepler.clients import pod_logs
from kepler.jobs import JobRef, JobResult, StartJob, WaitJob
from kepler.payloads import ApplyRelease, ApplyResult, RecordRelease, ReleaseSnapshot, ReleaseTarget

POLL_SECONDS = 0.25
MANUAL = "cronjob.kubernetes.io/instantiate"


def job_condition(job: dict) -> tuple[str, str] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"], f"{c.get('reason', '')}: {c.get('message', '')}".strip(": ")
    return None


class CronJobActivities(ReleaseActivities):
    workload = CRONJOB

    # --- releases of a cronjob service ---------------------------------------------------

    @activity.defn(name="cronjob.snapshot")
    def snapshot(self, target: ReleaseTarget) -> ReleaseSnapshot:
        """What the CronJob runs now; `replicas` is 1 when it is scheduled, 0 when suspended."""
        return self._snapshot(target)

    @activity.defn(name="cronjob.apply_release")
    def apply_release(self, req: ApplyRelease) -> ApplyResult:
        """Config, then the CronJob's pod template (image by digest, env, resources,
        annotations) and `suspend: false`; nothing is written when both already match."""
        return self._apply(req)

    @activity.defn(name="cronjob.restore_release")
    def restore_release(self, previous: ReleaseSnapshot) -> ApplyResult:
        return self._restore(previous)

    @activity.defn(name="cronjob.record_release")
    def record_release(self, req: RecordRelease) -> bool:
        return self._record(req)

    # --- runs ------------------------------------------------------------------------------

    @activity.defn(name="cronjob.start_job")
    def start_job(self, req: StartJob) -> JobRef:
        """A Job from the CronJob's template, as `kubectl create job --from=cronjob/...`."""
        cluster = self.clusters(req.target.env)
        ns = req.target.namespace
        live = cluster.get("Job", ns, req.name)
        if live is not None:  # a retry of this very start
            return JobRef(target=req.target, name=req.name,
                          image=live["spec"]["template"]["spec"]["containers"][0]["image"],
                          active_deadline=live["spec"].get("activeDeadlineSeconds") or 600)
        cj = cluster.get("CronJob", ns, req.target.name())
        if cj is None:
            raise non_retryable("NotFound", f"CronJob {ns}/{req.target.name()} does not exist: "
                                f"{req.target.service} is not a cronjob service in {req.target.env} "
                                "(type: cronjob in its spec, then kepler service create)")
        image = CRONJOB.container(cj)["image"]
        if image == manifests.PLACEHOLDER_IMAGE:
            raise non_retryable("InvalidInput", f"{req.target.service} has never been released in "
                                f"{req.target.env}: release it first (kepler release)")
        template = cj["spec"]["jobTemplate"]
        meta = template.get("metadata") or {}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": req.name, "namespace": ns,
                            "labels": {**(meta.get("labels") or {}), **naming.MANAGED_BY},
                            "annotations": {**(meta.get("annotations") or {}), MANUAL: "manual",
                                            **req.annotations},
                            "ownerReferences": [{
                                "apiVersion": "batch/v1", "kind": "CronJob",
                                "name": cj["metadata"]["name"], "uid": cj["metadata"]["uid"],
                                "controller": True, "blockOwnerDeletion": True}]},
               "spec": {**template["spec"], "backoffLimit": 0}}
        cluster.create(job)  # rbac: Job
        return JobRef(target=req.target, name=req.name, image=image, created=True,
                      active_deadline=template["spec"].get("activeDeadlineSeconds") or 600)

    @activity.defn(name="cronjob.wait_job")
    def wait_job(self, req: WaitJob) -> JobResult:
        """Wait for the Job's verdict, heartbeating; a failed run (or one whose pod cannot
        start) fails non-retryable with the tail of its log."""
        ref = req.job
        cluster = self.clusters(ref.target.env)
        ns = ref.target.namespace
        deadline = time.monotonic() + req.timeout.total_seconds()
        while True:
            job = cluster.get("Job", ns, ref.name)
            if job is None:
                raise non_retryable("JobFailed", f"Job {ns}/{ref.name} disappeared before it ended")
            verdict = job_condition(job)
            if verdict is not None:
                tail = self.log_tail(cluster, ns, ref.name)
                if verdict[0] == "Complete":
                    return JobResult(name=ref.name, outcome="succeeded", detail=verdict[1],
                                     log_tail=tail)
                raise non_retryable("JobFailed", f"Job {ns}/{ref.name} failed: {verdict[1]}"
                                    + (f"; last log lines: {' | '.join(tail)}" if tail else ""))
            problem = self._pod_problem(cluster, ns, ref.name)
            if problem:
                raise non_retryable("JobFailed", f"Job {ns}/{ref.name}: {problem}")
            if time.monotonic() > deadline:
                raise non_retryable("JobFailed", f"Job {ns}/{ref.name} did not end within "
                                    f"{req.timeout}")
            status = job.get("status") or {}
            activity.heartbeat(f"active {status.get('active', 0)}, failed {status.get('failed', 0)}")
            time.sleep(POLL_SECONDS)

    @activity.defn(name="cronjob.stop_job")
    def stop_job(self, ref: JobRef) -> bool:
        """Undo of a run: delete the Job (and its pods) if it is still running; a finished
        one stays, as the record of what happened."""
        cluster = self.clusters(ref.target.env)
        job = cluster.get("Job", ref.target.namespace, ref.name)
        if job is None or job_condition(job) is not None:
            return False
        return cluster.delete("Job", ref.target.namespace, ref.name)

    @staticmethod
    def _pod_problem(cluster: Cluster, namespace: str, job: str) -> str | None:
        for pod in cluster.list("Pod", namespace, f"job-name={job}"):
            if problem := cannot_start(pod):
                return problem
        return None

    @staticmethod
    def log_tail(cluster: Cluster, namespace: str, job: str, lines: int = 5) -> list[str]:
        """The last lines of the Job's newest pod (best effort: logs may be gone)."""
        pods = cluster.list("Pod", namespace, f"job-name={job}")
        if not pods:
            return []
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
        try:
            read = pod_logs.read(k8s.CoreV1Api(cluster.api), namespace, pod["metadata"]["name"],
                                 container=None, since_seconds=None, tail=lines, timeout=10)
        except (ApiException, OSError):
            return []
        return [line.text for line in read if line.text][-lines:]
