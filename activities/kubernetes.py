"""Kubernetes: lay down a service's objects, apply a release, watch its rollout.

Writes read first and send the resourceVersion they read; on 409 they re-read and
re-apply (bounded), so a concurrent change is never blindly overwritten.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import non_retryable
from activities.k8s_client import Cluster, Clusters
from kepler import manifests, naming
from kepler.models import Resources
from kepler.settings import Platform
from kepler.steps import (
    Applied, ApplyObjects, ApplyRelease, ApplyResult, ReleaseSnapshot, ReleaseTarget, Revision,
    RolloutResult, ScaleDeployment, UndoCreated, WaitRollout,
)

POLL_SECONDS = 0.25  # the steady poll of a rollout; the first polls come sooner, so a
FIRST_POLL_SECONDS = 0.02  # rollout done at once is seen in tens of ms, not a whole period
FATAL_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                 "CreateContainerConfigError")
CONFLICT_RETRIES = 5
HEARTBEAT_AFTER_SECONDS = 1.0  # well inside the 10 s heartbeat timeout of LONG_WAIT steps


def read_modify_write(cluster: Cluster, kind: str, namespace: str, name: str,
                      change: Callable[[dict], bool], live: dict | None = None) -> dict:
    """Apply `change` to the live object (`live`, when the caller has just read it);
    retry on 409 with a fresh read."""
    for attempt in range(CONFLICT_RETRIES):
        obj = live if attempt == 0 and live is not None else cluster.get(kind, namespace, name)
        if obj is None:
            raise non_retryable("NotFound", f"{kind} {namespace}/{name} does not exist: "
                                "create the service first (kepler service create)")
        if not change(obj):
            return obj
        try:
            return cluster.replace(obj)
        except ApplicationError as e:
            if e.type != "Conflict409":
                raise
    raise ApplicationError(f"{kind} {namespace}/{name} kept changing under us (409 x{CONFLICT_RETRIES})",
                           type="Conflict409")


def snapshot_of(cluster: Cluster, target: ReleaseTarget, workload: dict, c: dict,
                replicas: int) -> ReleaseSnapshot:
    """What a workload (Deployment or CronJob) runs now: image, config, resources, env and
    Kepler's annotations, enough to put it back exactly."""
    cm = cluster.get("ConfigMap", target.namespace, naming.config_map_name(target.service))
    res = c.get("resources", {})
    return ReleaseSnapshot(
        target=target, exists=True, image=c.get("image", ""), replicas=replicas,
        annotations={k: v for k, v in (workload["metadata"].get("annotations") or {}).items()
                     if k.startswith(naming.ANNOTATION_PREFIX) and k != naming.CREATED_BY_RUN},
        config=(cm.get("data") or {}) if cm else None,
        resources=Resources(
            cpu_request=res.get("requests", {}).get("cpu", "100m"),
            memory_request=res.get("requests", {}).get("memory", "128Mi"),
            cpu_limit=res.get("limits", {}).get("cpu", "500m"),
            memory_limit=res.get("limits", {}).get("memory", "256Mi")),
        env={e["name"]: e.get("value", "") for e in c.get("env") or []},
    )


def container(deploy: dict) -> dict:
    return deploy["spec"]["template"]["spec"]["containers"][0]


class KubernetesActivities:
    def __init__(self, platform: Platform) -> None:
        self.clusters = Clusters(platform)

    # --- objects of a service -----------------------------------------------------------------

    @activity.defn(name="kubernetes.apply_objects")
    def apply_objects(self, req: ApplyObjects) -> list[Applied]:
        """Create each object, or bring an existing one up to date. A Deployment that
        exists keeps its image and replicas (releases own those)."""
        cluster = self.clusters(req.env)
        results = []
        for manifest in req.manifests:
            obj = copy.deepcopy(manifest)
            kind, meta = obj["kind"], obj["metadata"]
            ns, name = meta.get("namespace"), meta["name"]
            live = cluster.get(kind, ns, name)
            if live is None:
                meta.setdefault("annotations", {})[naming.CREATED_BY_RUN] = req.run_id
                try:
                    cluster.create(obj)
                    results.append(Applied(kind=kind, namespace=ns or "", name=name, created=True))
                    continue
                except ApplicationError as e:
                    if e.type != "Conflict409":  # created meanwhile (e.g. a retried call)
                        raise
                    live = cluster.get(kind, ns, name)
            if kind != "Deployment":
                patch = {"metadata": {"labels": meta.get("labels", {})}}
                if "spec" in obj:
                    patch["spec"] = obj["spec"]
                if "data" in obj and kind != "ConfigMap":
                    patch["data"] = obj["data"]
                cluster.patch(kind, ns, name, patch)
            created = (live or {}).get("metadata", {}).get("annotations", {}).get(
                naming.CREATED_BY_RUN) == req.run_id
            results.append(Applied(kind=kind, namespace=ns or "", name=name, created=created))
        return results

    @activity.defn(name="kubernetes.delete_if_created")
    def delete_if_created(self, undo: UndoCreated) -> bool:
        cluster = self.clusters(undo.env)
        live = cluster.get(undo.kind, undo.namespace or None, undo.name)
        if live is None:
            return False
        if live["metadata"].get("annotations", {}).get(naming.CREATED_BY_RUN) != undo.run_id:
            return False
        return cluster.delete(undo.kind, undo.namespace or None, undo.name)

    @activity.defn(name="kubernetes.delete_object")
    def delete_object(self, undo: UndoCreated) -> bool:
        return self.clusters(undo.env).delete(undo.kind, undo.namespace or None, undo.name)

    # --- releases -----------------------------------------------------------------------------

    @activity.defn(name="kubernetes.snapshot")
    def snapshot(self, target: ReleaseTarget) -> ReleaseSnapshot:
        cluster = self.clusters(target.env)
        deploy = cluster.get("Deployment", target.namespace, target.name())
        if deploy is None:
            return ReleaseSnapshot(target=target)
        return snapshot_of(cluster, target, deploy, container(deploy),
                           replicas=deploy["spec"].get("replicas", 0))

    @activity.defn(name="kubernetes.apply_release")
    def apply_release(self, req: ApplyRelease) -> ApplyResult:
        """Config first, then the Deployment; nothing is written when both already match."""
        return self._apply(req.target, req.image, req.replicas, req.config, req.env,
                           req.resources, req.annotations)

    @activity.defn(name="kubernetes.restore_release")
    def restore_release(self, previous: ReleaseSnapshot) -> ApplyResult:
        if not previous.exists:
            return ApplyResult(changed=False, generation=0)
        return self._apply(previous.target, previous.image, previous.replicas, previous.config,
                           previous.env, previous.resources, previous.annotations)

    def _apply(self, target: ReleaseTarget, image: str, replicas: int,
               config: dict[str, str] | None, env: dict[str, str], resources: Resources | None,
               annotations: dict[str, str]) -> ApplyResult:
        cluster = self.clusters(target.env)
        cm_name = naming.config_map_name(target.service)
        config_hash = manifests.config_hash(config or {})
        if config is not None and target.name() == target.service:
            self._apply_config(cluster, target, cm_name, config)
        changed = False

        def change(deploy: dict) -> bool:
            nonlocal changed
            c = container(deploy)
            template = deploy["spec"]["template"]
            tmpl_ann = template["metadata"].setdefault("annotations", {}) or {}
            desired_env = [{"name": k, "value": v} for k, v in sorted(env.items())]
            same = (c.get("image") == image and deploy["spec"].get("replicas") == replicas
                    and tmpl_ann.get(naming.CONFIG_HASH) == config_hash
                    and (c.get("env") or []) == desired_env
                    and (resources is None or c.get("resources") == manifests.resources_block(resources)))
            if same:
                return False
            c["image"] = image
            c["env"] = desired_env
            if resources is not None:
                c["resources"] = manifests.resources_block(resources)
            deploy["spec"]["replicas"] = replicas
            template["metadata"]["annotations"] = {**tmpl_ann, **annotations,
                                                   naming.CONFIG_HASH: config_hash}
            meta_ann = deploy["metadata"].setdefault("annotations", {}) or {}
            deploy["metadata"]["annotations"] = {**meta_ann, **annotations}
            changed = True
            return True

        live = read_modify_write(cluster, "Deployment", target.namespace, target.name(), change)
        return ApplyResult(changed=changed, generation=live["metadata"].get("generation", 0))

    @staticmethod
    def _apply_config(cluster: Cluster, target: ReleaseTarget, name: str,
                      config: dict[str, str]) -> None:
        live = cluster.get("ConfigMap", target.namespace, name)
        if live is None:
            cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "data": config,
                            "metadata": {"name": name, "namespace": target.namespace,
                                         "labels": {"app": target.service, **naming.MANAGED_BY}}})
            return

        def change(cm: dict) -> bool:
            if (cm.get("data") or {}) == config:
                return False
            cm["data"] = config
            return True

        read_modify_write(cluster, "ConfigMap", target.namespace, name, change, live)

    @activity.defn(name="kubernetes.wait_rollout")
    def wait_rollout(self, req: WaitRollout) -> RolloutResult:
        """Wait until the Deployment's generation is fully rolled out, heartbeating.
        Fails fast, non-retryable, on a deadline exceeded or a pod that cannot start."""
        cluster = self.clusters(req.target.env)
        ns, name = req.target.namespace, req.target.name()
        started = time.monotonic()
        deadline = started + req.timeout.total_seconds()
        delay = FIRST_POLL_SECONDS
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
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                    raise non_retryable("RolloutFailed", f"{ns}/{name}: ProgressDeadlineExceeded: "
                                        f"{cond.get('message', '')} {self._pod_problem(cluster, deploy) or ''}".strip())
            if observed and updated >= want and available >= want and status.get("replicas", 0) <= want:
                return RolloutResult(ready_replicas=available, revision=(
                    deploy["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", ""))
            # Pods are read once the quick first polls are over: a rollout done within
            # them costs one request a poll, and a pod that cannot start is still seen
            # within a poll period.
            problem = self._pod_problem(cluster, deploy) if delay >= POLL_SECONDS else None
            if problem:
                raise non_retryable("RolloutFailed", f"{ns}/{name}: {problem}")
            if time.monotonic() > deadline:
                raise non_retryable("RolloutFailed", f"{ns}/{name}: not rolled out after "
                                    f"{req.timeout} ({progress})")
            if time.monotonic() - started >= HEARTBEAT_AFTER_SECONDS:
                activity.heartbeat(progress)  # a server write: not for a rollout done in ms
            time.sleep(delay)
            delay = min(POLL_SECONDS, delay * 2)

    @staticmethod
    def _pod_problem(cluster: Cluster, deploy: dict) -> str | None:
        labels = deploy["spec"]["selector"].get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        image = container(deploy)["image"]
        for pod in cluster.list("Pod", deploy["metadata"]["namespace"], selector):
            if pod["spec"]["containers"][0].get("image") != image:
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in FATAL_WAITING:
                    return f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
        return None

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

    @activity.defn(name="kubernetes.current_revision")
    def current_revision(self, target: ReleaseTarget) -> int:
        deploy = self.clusters(target.env).get("Deployment", target.namespace, target.name())
        ann = (deploy or {}).get("metadata", {}).get("annotations") or {}
        return int(ann.get("deployment.kubernetes.io/revision", 0))

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
