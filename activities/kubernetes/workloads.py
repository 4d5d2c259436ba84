"""Kubernetes Deployments: lay down a service's objects, apply a release, watch its
rollout, read its revisions, scale it.

Writes read first and send the resourceVersion they read; on 409 they re-read and
re-apply (bounded), so a concurrent change is never blindly overwritten.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime, timezone

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import non_retryable
from activities.kubernetes.client import Cluster
from activities.kubernetes.release import (DEPLOYMENT, ReleaseActivities, cannot_start, history_of,
                                          own_record, why_not_ready)
from kepler import naming
from kepler.promotion import LiveRelease, live_release_of
from kepler.payloads import (
    AdoptedObject, Applied, ApplyObjects, ApplyRelease, ApplyResult, DeployRelease, DeployResult,
    RecordRelease,
    ReleaseSnapshot, ReleaseTarget, Revision, RolloutResult, ScaleDeployment, UndoCreated,
    WaitRollout,
)

POLL_SECONDS = 0.25  # the steady poll of a rollout; the first polls come sooner, so a
FIRST_POLL_SECONDS = 0.02  # rollout done at once is seen in tens of ms, not a whole period
POD_CHECK_SECONDS = 1.0  # how often a rollout's pods are read for one that cannot start
HEARTBEAT_AFTER_SECONDS = 1.0  # well inside the 10 s heartbeat timeout of LONG_WAIT steps


def kepler_made(live: dict, manifest: dict) -> bool:
    """`live` carries Kepler's mark of the service `manifest` is of: made by a Kepler run
    (its annotation), labelled as Kepler's and (but for a namespace) as that service's."""
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    return (naming.CREATED_BY_RUN in (meta.get("annotations") or {})
            and all(labels.get(k) == v for k, v in naming.MANAGED_BY.items())
            and labels.get("app") == (manifest["metadata"].get("labels") or {}).get("app"))


class DeploymentActivities(ReleaseActivities):
    workload = DEPLOYMENT

    # --- objects of a service -----------------------------------------------------------------

    @activity.defn(name="kubernetes.apply_objects")
    def apply_objects(self, req: ApplyObjects) -> list[Applied]:
        """Create each object, or bring an existing one up to date. A Deployment that
        exists keeps its image and replicas (releases own those); a namespace Kepler did
        not create is used as it is, never changed."""
        cluster = self.clusters(req.env)
        results = []
        for manifest in req.manifests:
            obj = copy.deepcopy(manifest)
            kind, meta = obj["kind"], obj["metadata"]
            ns, name = meta.get("namespace"), meta["name"]
            live = cluster.get(kind, ns, name)  # rbac: MANAGED_KINDS
            if live is None:
                meta.setdefault("annotations", {})[naming.CREATED_BY_RUN] = req.run_id
                try:
                    cluster.create(obj)  # rbac: MANAGED_KINDS
                    results.append(Applied(kind=kind, namespace=ns or "", name=name, created=True))
                    continue
                except ApplicationError as e:
                    if e.type != "Conflict409":  # created meanwhile (e.g. a retried call)
                        raise
                    live = cluster.get(kind, ns, name)  # rbac: MANAGED_KINDS
            ours = kepler_made(live or {}, manifest)
            if kind == "Namespace" and not ours:
                results.append(Applied(kind=kind, namespace="", name=name, created=False))
                continue
            if kind != "Deployment":
                labels = meta.get("labels", {})
                if not ours:  # adopted: brought up to date, never labelled as Kepler's
                    labels = {k: v for k, v in labels.items() if k not in naming.MANAGED_BY}
                patch = {"metadata": {"labels": labels}}
                if "spec" in obj:
                    patch["spec"] = obj["spec"]
                if "data" in obj and kind != "ConfigMap":
                    patch["data"] = obj["data"]
                cluster.patch(kind, ns, name, patch)  # rbac: MANAGED_KINDS
            created = (live or {}).get("metadata", {}).get("annotations", {}).get(
                naming.CREATED_BY_RUN) == req.run_id
            results.append(Applied(kind=kind, namespace=ns or "", name=name, created=created))
        return results

    @activity.defn(name="kubernetes.record_adopted")
    def record_adopted(self, req: ApplyObjects) -> list[AdoptedObject]:
        """Before apply_objects: each object it would bring up to date, as it is now."""
        cluster = self.clusters(req.env)
        found = []
        for manifest in req.manifests:
            kind, meta = manifest["kind"], manifest["metadata"]
            if kind == "Deployment":  # an existing Deployment is left alone by apply_objects
                continue
            live = cluster.get(kind, meta.get("namespace"), meta["name"])  # rbac: MANAGED_KINDS
            if live is not None and not (kind == "Namespace" and not kepler_made(live, manifest)):
                found.append(AdoptedObject(
                    env=req.env, kind=kind, namespace=meta.get("namespace") or "", name=meta["name"],
                    labels=live["metadata"].get("labels") or {},
                    spec=live.get("spec") if "spec" in manifest else None))
        return found

    @activity.defn(name="kubernetes.foreign_objects")
    def foreign_objects(self, req: ApplyObjects) -> list[AdoptedObject]:
        """Before a create changes anything: the objects it would lay down that exist
        already without Kepler's mark of this service — what only an admin's `adopt` may
        take over. A namespace is not one (apply_objects uses it, never changes it). Only
        kind and name are returned: what someone else's object holds stays out of history."""
        cluster = self.clusters(req.env)
        found = []
        for manifest in req.manifests:
            kind, meta = manifest["kind"], manifest["metadata"]
            if kind == "Namespace":
                continue
            live = cluster.get(kind, meta.get("namespace"), meta["name"])  # rbac: MANAGED_KINDS
            if live is not None and not kepler_made(live, manifest):
                found.append(AdoptedObject(env=req.env, kind=kind,
                                           namespace=meta.get("namespace") or "", name=meta["name"]))
        return found

    @activity.defn(name="kubernetes.restore_adopted")
    def restore_adopted(self, before: AdoptedObject) -> bool:
        """Undo apply_objects on an object that existed before: its labels and spec as
        recorded (a replace with the live resourceVersion: a concurrent change gets 409)."""
        cluster = self.clusters(before.env)
        live = cluster.get(before.kind, before.namespace or None, before.name)  # rbac: MANAGED_KINDS
        if live is None:
            return False
        live["metadata"]["labels"] = before.labels
        if before.spec is not None:
            live["spec"] = before.spec
        cluster.replace(live)  # rbac: MANAGED_KINDS
        return True

    @activity.defn(name="kubernetes.delete_if_created")
    def delete_if_created(self, undo: UndoCreated) -> bool:
        cluster = self.clusters(undo.env)
        live = cluster.get(undo.kind, undo.namespace or None, undo.name)  # rbac: MANAGED_KINDS
        if live is None:
            return False
        if live["metadata"].get("annotations", {}).get(naming.CREATED_BY_RUN) != undo.run_id:
            return False
        # a Namespace too: the undo of a create deletes the namespace that run made
        return cluster.delete(  # rbac: MANAGED_KINDS
            undo.kind, undo.namespace or None, undo.name)

    # --- releases -----------------------------------------------------------------------------

    @activity.defn(name="kubernetes.snapshot")
    def snapshot(self, target: ReleaseTarget) -> ReleaseSnapshot:
        return self._snapshot(target)

    @activity.defn(name="kubernetes.apply_release")
    def apply_release(self, req: ApplyRelease) -> ApplyResult:
        """Config first, then the Deployment; nothing is written when both already match."""
        return self._apply(req)

    @activity.defn(name="kubernetes.restore_release")
    def restore_release(self, previous: ReleaseSnapshot) -> ApplyResult:
        return self._restore(previous)

    @activity.defn(name="kubernetes.record_release")
    def record_release(self, req: RecordRelease) -> bool:
        return self._record(req)

    @activity.defn(name="kubernetes.wait_rollout")
    def wait_rollout(self, req: WaitRollout) -> RolloutResult:
        """Wait until the Deployment's generation is fully rolled out, heartbeating.
        Fails fast, non-retryable, on a deadline exceeded or a pod that cannot start."""
        return self._wait_rollout(req)[0]

    @activity.defn(name="kubernetes.deploy_release")
    def deploy_release(self, req: DeployRelease) -> DeployResult:
        """apply_release, then wait_rollout; then, with `req.record`, record_release stamped
        now: one activity where a release would make three (a retry applies again, which
        writes nothing when the Deployment runs it already, and waits again). A record
        that is not the calling run's own, or not of this image, is refused first."""
        if req.record is not None:
            own_record(req.record)
            if req.record.image != req.release.image:
                raise non_retryable("InvalidInput", "record.image: must be the image applied")
        applied = self._apply(req.release)
        target = req.release.target
        rollout, live = self._wait_rollout(WaitRollout(target=target, generation=applied.generation,
                                                       timeout=req.timeout))
        if req.record is None:
            return DeployResult(applied=applied, rollout=rollout)
        record = req.record.model_copy(update={"at": datetime.now(timezone.utc)})
        self._record(RecordRelease(target=target, record=record), live)
        return DeployResult(applied=applied, rollout=rollout, recorded=True)

    def _wait_rollout(self, req: WaitRollout) -> tuple[RolloutResult, dict]:
        """The rollout's result, and the Deployment as last read."""
        cluster = self.clusters(req.target.env)
        ns, name = req.target.namespace, req.target.name()
        started = time.monotonic()
        deadline = started + req.timeout.total_seconds()
        delay, pods_read = FIRST_POLL_SECONDS, 0.0
        while True:
            deploy = cluster.get("Deployment", ns, name)
            if deploy is None:
                raise non_retryable("NotFound", f"Deployment {ns}/{name} disappeared")
            spec, status = deploy["spec"], deploy.get("status") or {}
            want = spec.get("replicas", 1)
            observed = status.get("observedGeneration", 0) >= req.generation
            updated = status.get("updatedReplicas", 0)
            available = status.get("availableReplicas", 0)
            progress = f"{updated}/{want} updated, {available} available"
            # conditions speak of the generation the controller last observed: until it has
            # seen ours, a ProgressDeadlineExceeded is the previous rollout's
            for cond in (status.get("conditions") or []) if observed else []:
                if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                    raise non_retryable("RolloutFailed", f"{ns}/{name}: ProgressDeadlineExceeded: "
                                        f"{cond.get('message', '')} {self._pod_problem(cluster, deploy) or ''}".strip())
            if observed and updated >= want and available >= want and status.get("replicas", 0) <= want:
                return RolloutResult(ready_replicas=available, revision=(
                    deploy["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "")), deploy
            # Pods are read once the quick first polls are over, and then once a second: a
            # rollout done within them costs one request a poll, and a pod that cannot start
            # is still seen within a second (a list of pods costs several polls' CPU).
            if delay >= POLL_SECONDS and time.monotonic() - pods_read >= POD_CHECK_SECONDS:
                pods_read = time.monotonic()
                if problem := self._pod_problem(cluster, deploy):
                    raise non_retryable("RolloutFailed", f"{ns}/{name}: {problem}")
            if time.monotonic() > deadline:
                waiting = self._not_ready(cluster, deploy)
                raise non_retryable("RolloutFailed", f"{ns}/{name}: not rolled out after "
                                    f"{req.timeout} ({progress})" + (f": {waiting}" if waiting else ""))
            if time.monotonic() - started >= HEARTBEAT_AFTER_SECONDS:
                activity.heartbeat(progress)  # a server write: not for a rollout done in ms
            time.sleep(delay)
            delay = min(POLL_SECONDS, delay * 2)

    @staticmethod
    def _current_pods(cluster: Cluster, deploy: dict) -> list[dict]:
        """The Deployment's pods that run its current image."""
        labels = deploy["spec"]["selector"].get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        image = DEPLOYMENT.container(deploy)["image"]
        return [pod for pod in cluster.list("Pod", deploy["metadata"]["namespace"], selector)
                if pod["spec"]["containers"][0].get("image") == image]

    def _pod_problem(self, cluster: Cluster, deploy: dict) -> str | None:
        """A pod of the Deployment's current image that cannot start."""
        return next((p for pod in self._current_pods(cluster, deploy) if (p := cannot_start(pod))), None)

    def _not_ready(self, cluster: Cluster, deploy: dict, most: int = 3) -> str:
        """Why the Deployment's pods of its current image are not Ready (the first few)."""
        reasons = [why for pod in self._current_pods(cluster, deploy) if (why := why_not_ready(pod))]
        more = len(reasons) - most
        return "; ".join(reasons[:most]) + (f"; and {more} more" if more > 0 else "")

    @activity.defn(name="kubernetes.revision_history")
    def revision_history(self, target: ReleaseTarget) -> list[Revision]:
        """The Deployment's ReplicaSets, newest first, with Kepler's release annotations."""
        cluster = self.clusters(target.env)
        deploy = cluster.get("Deployment", target.namespace, target.name())
        if deploy is None:
            raise non_retryable("NotFound", f"Deployment {target.namespace}/{target.name()} does not exist")
        uid = deploy["metadata"]["uid"]
        revisions = []
        for rs in cluster.list("ReplicaSet", target.namespace, f"app={target.service}"):
            if not any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or []):
                continue
            ann = rs["metadata"].get("annotations") or {}
            tmpl_ann = rs["spec"]["template"]["metadata"].get("annotations") or {}
            revisions.append(Revision(
                revision=int(ann.get("deployment.kubernetes.io/revision", 0)),
                image=rs["spec"]["template"]["spec"]["containers"][0]["image"],
                commit=tmpl_ann.get(naming.COMMIT, ""), release_id=tmpl_ann.get(naming.RELEASE_ID, ""),
                requested_by=tmpl_ann.get(naming.REQUESTED_BY, "")))
        return sorted(revisions, key=lambda r: r.revision, reverse=True)

    @activity.defn(name="kubernetes.live_release")
    def live_release(self, target: ReleaseTarget) -> LiveRelease:
        """What a promotion takes: the release Kepler recorded live and healthy, if the
        Deployment still runs exactly it, fully rolled out and available."""
        deploy = self.clusters(target.env).get("Deployment", target.namespace, target.name())
        history = history_of((deploy or {}).get("metadata", {}).get("annotations") or {})
        image = DEPLOYMENT.container(deploy).get("image", "") if deploy else ""
        return live_release_of(deploy, history, image, f"{target.namespace}/{target.name()}")

    @activity.defn(name="kubernetes.scale")
    def scale(self, req: ScaleDeployment) -> bool:
        """Set the replicas of a Deployment; False when it does not exist or already has them."""
        cluster = self.clusters(req.target.env)
        live = cluster.get("Deployment", req.target.namespace, req.target.name())
        if live is None or live["spec"].get("replicas") == req.replicas:
            return False
        cluster.patch("Deployment", req.target.namespace, req.target.name(),
                      {"spec": {"replicas": req.replicas}})
        return True
