"""Release hooks: start a hook's Job (kepler/hooks.py says what it is) and stop it if it
still runs. Waiting for its verdict and its log tail are `cronjob.wait_job`'s, the same
for every Job Kepler starts.

A hook's Job runs the release's image in the environment, so starting one is checked like
an apply (activities/authorization.py): the run's signed request and approvals, for that
exact image. Only the run that created a hook Job adopts it on a retry or deletes it.
"""

from __future__ import annotations

import time

from temporalio import activity

from activities.authority import calling_run
from activities.authorization import authorize_image, refused, through_freeze
from activities.errors import non_retryable, retryable
from activities.kubernetes.client import Cluster, ClusterActivities
from activities.kubernetes.cronjob import job_condition
from activities.kubernetes.release import history_of
from kepler import hooks, naming
from kepler.jobs import JobRef

STOP_WAIT_SECONDS = 20  # within the step's 30 s; a retry waits on


def created_by(obj: dict | None, run_id: str) -> bool:
    return bool(obj) and (obj["metadata"].get("annotations") or {}).get(  # type: ignore[index]
        naming.CREATED_BY_RUN) == run_id


class HookActivities(ClusterActivities):
    @activity.defn(name="hook.start_job")
    def start_job(self, req: hooks.StartHook) -> JobRef:
        """Create the hook's Job (suspended), its ConfigMap, then let it start; a retry of
        this run's own start finishes what the first attempt began."""
        target, run_id = req.release.target, activity.info().workflow_run_id
        cluster = self.clusters(target.env)
        ns = target.namespace
        owner = cluster.get("Deployment", ns, target.service)
        if owner is None:
            raise non_retryable("NotFound", f"Deployment {ns}/{target.service} does not exist: "
                                "create the service first (kepler service create)")
        auth = req.authorization  # the image reaches the environment: as an apply
        if auth is None:
            raise refused(f"no authorization to run {req.release.image} in {ns}")
        run = calling_run()
        first_run_id = run.first_run_id if run else auth.first_run_id
        if req.hook == "undo" and self._ran_pre_deploy(cluster, req, first_run_id):
            pass  # this run's own pre_deploy, approved when it ran: its undo needs no more
        elif req.hook == "undo" or not through_freeze(self.platform, target, req.release.image,
                                                        auth, hook=True):
            authorize_image(self.platform, target, req.release.image, req.release.commit,
                            auth, history_of(owner["metadata"].get("annotations") or {}))
        job = cluster.get("Job", ns, req.name)
        if job is not None and not created_by(job, run_id):
            raise non_retryable("Conflict", f"Job {ns}/{req.name} exists and was not created by "
                                "this run: Kepler leaves it alone")
        if job is None:
            job = cluster.create(hooks.hook_job(req, run_id, owner["metadata"]["uid"]))  # rbac: Job
        self._config(cluster, req, run_id, job)
        if job["spec"].get("suspend"):
            cluster.patch("Job", ns, req.name, {"spec": {"suspend": False}})
        return JobRef(target=target, name=req.name, image=req.release.image, created=True,
                      active_deadline=req.timeout)

    @staticmethod
    def _ran_pre_deploy(cluster: Cluster, req: hooks.StartHook, first_run_id: str) -> bool:
        """This run (or the first run of its chain, for a continued canary) created the
        pre_deploy Job of this very image: the undo undoes what was approved then, and
        runs even once those approvals have expired."""
        target = req.release.target
        for run in {activity.info().workflow_run_id, first_run_id} - {""}:
            job = cluster.get("Job", target.namespace, hooks.job_name(target.service, run, "pre_deploy"))
            if job is not None and created_by(job, run) and \
                    job["spec"]["template"]["spec"]["containers"][0].get("image") == req.release.image:
                return True
        return False

    @staticmethod
    def _config(cluster: Cluster, req: hooks.StartHook, run_id: str, job: dict) -> None:
        ns = req.release.target.namespace
        live = cluster.get("ConfigMap", ns, req.name)
        if live is None:
            cluster.create(hooks.hook_config_map(req, run_id, job))  # rbac: ConfigMap
        elif not created_by(live, run_id):
            raise non_retryable("Conflict", f"ConfigMap {ns}/{req.name} exists and was not "
                                "created by this run: Kepler leaves it alone")

    @activity.defn(name="hook.stop_job")
    def stop_job(self, ref: JobRef) -> bool:
        """Clean-up of a hook cut short: delete its Job (its pod and ConfigMap go with it) if
        it still runs and this run created it; a finished one stays as the record."""
        cluster = self.clusters(ref.target.env)
        job = cluster.get("Job", ref.target.namespace, ref.name)
        if job is None or job_condition(job) is not None or \
                not created_by(job, activity.info().workflow_run_id):
            return False
        cluster.delete("Job", ref.target.namespace, ref.name)
        # Foreground: the Job goes once its pod has stopped. The undo must not start while
        # the hook still runs, so this returns only then (a retry waits on).
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while cluster.get("Job", ref.target.namespace, ref.name) is not None:
            if time.monotonic() > deadline:
                raise retryable(f"Job {ref.target.namespace}/{ref.name} is still stopping")
            time.sleep(0.5)
        return True
