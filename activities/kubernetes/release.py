"""The one path that puts a release on a workload, and puts a snapshot back.

A Deployment (workloads.py) and a cronjob service's CronJob (cronjob.py) run the same
kind of pod template; they keep it in different places and say "running" differently
(`replicas` vs `suspend`). `Workload` names those differences; the rest is here, once:
what a snapshot records, the service's ConfigMap, and the patch of the pod template
(image by digest, env, resources, Kepler's annotations, and the config hash that rolls
the pods when only the config changed), written read-modify-write (409-safe) and only
when something differs.
"""

from __future__ import annotations

import json
from typing import Any

from activities.errors import non_retryable
from activities.kubernetes.client import Cluster, ClusterActivities, read_modify_write
from activities.authority import calling_run
from activities.authorization import authorize
from kepler import manifests, naming
from kepler.spec import Resources
from kepler.payloads import (
    ApplyRelease, ApplyResult, PodShape, RecordRelease, ReleaseRecord, ReleaseSnapshot, history_of,
    ReleaseTarget,
)

# A pod whose container waits for one of these will not start without a new release.
FATAL_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                 "CreateContainerConfigError")


class Workload:
    """Where a kind of workload keeps its pod template, and how it says "running"."""
    kind = ""

    def template(self, obj: dict) -> dict:
        raise NotImplementedError

    def replicas(self, obj: dict) -> int:
        """What a snapshot records."""
        raise NotImplementedError

    def at_scale(self, obj: dict, replicas: int) -> bool:
        raise NotImplementedError

    def set_scale(self, obj: dict, replicas: int) -> None:
        raise NotImplementedError

    def container(self, obj: dict) -> dict:
        return self.template(obj)["spec"]["containers"][0]


class _Deployment(Workload):
    kind = "Deployment"

    def template(self, obj: dict) -> dict:
        return obj["spec"]["template"]

    def replicas(self, obj: dict) -> int:
        return obj["spec"].get("replicas", 0)

    def at_scale(self, obj: dict, replicas: int) -> bool:
        return obj["spec"].get("replicas") == replicas

    def set_scale(self, obj: dict, replicas: int) -> None:
        obj["spec"]["replicas"] = replicas


class _CronJob(Workload):
    """A CronJob is 'running' (replicas 1) when scheduled, not when suspended (0)."""
    kind = "CronJob"

    def template(self, obj: dict) -> dict:
        return obj["spec"]["jobTemplate"]["spec"]["template"]

    def replicas(self, obj: dict) -> int:
        return 0 if obj["spec"].get("suspend") else 1

    def at_scale(self, obj: dict, replicas: int) -> bool:
        return bool(obj["spec"].get("suspend")) == (replicas == 0)

    def set_scale(self, obj: dict, replicas: int) -> None:
        obj["spec"]["suspend"] = replicas == 0


DEPLOYMENT: Workload = _Deployment()
CRONJOB: Workload = _CronJob()


def resources_of(c: dict) -> Resources | None:
    """A container's requests and limits (Kepler's defaults for a missing one); None
    when it sets none."""
    res = c.get("resources") or {}
    if not res:
        return None
    requests, limits = res.get("requests", {}), res.get("limits", {})
    return Resources(cpu_request=requests.get("cpu", "100m"),
                     memory_request=requests.get("memory", "128Mi"),
                     cpu_limit=limits.get("cpu", "500m"), memory_limit=limits.get("memory", "256Mi"))


def cannot_start(pod: dict) -> str | None:
    """Why the pod's container cannot start (FATAL_WAITING), or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return (f"pod {pod['metadata']['name']}: {waiting['reason']}: "
                    f"{waiting.get('message', '')}").strip()
    return None


def why_not_ready(pod: dict) -> str | None:
    """What a pod that is not Ready is waiting for (unscheduled, a waiting container, a
    failing condition), or None when it is Ready: what a rollout that timed out shows."""
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return None
    why = [status.get("phase") or "Pending"]
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        why.append(f"unscheduled: {scheduled.get('reason', '')} {scheduled.get('message', '')}".strip())
    elif not (pod.get("spec") or {}).get("nodeName"):
        why.append("not on a node yet")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            why.append(f"{cs.get('name')}: {waiting.get('reason', 'waiting')}")
    reason = (conditions.get("Ready") or {}).get("reason")
    why.append(f"not Ready ({reason})" if reason else "not Ready")
    return f"pod {pod['metadata']['name']}: " + ", ".join(why)


def shape_of(template: dict) -> PodShape:
    c = template["spec"]["containers"][0]
    return PodShape(ports=c.get("ports") or [], readiness_probe=c.get("readinessProbe"),
                    volume_mounts=c.get("volumeMounts") or [],
                    volumes=template["spec"].get("volumes") or [])


def covers(live: Any, wanted: Any) -> bool:
    """`live` says all that `wanted` says (an API server adds defaults, e.g. a probe's
    periodSeconds or a volume's defaultMode: those are no reason to write again)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(covers(live.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (isinstance(live, list) and len(live) == len(wanted)
                and all(covers(a, b) for a, b in zip(live, wanted)))
    return live == wanted


def set_shape(template: dict, shape: PodShape) -> None:
    c = template["spec"]["containers"][0]
    for key, value in (("ports", shape.ports), ("readinessProbe", shape.readiness_probe),
                       ("volumeMounts", shape.volume_mounts)):
        if value:
            c[key] = value
        else:
            c.pop(key, None)
    template["spec"]["volumes"] = shape.volumes


def _release_keys(annotations: dict[str, str]) -> set[str]:
    """Kepler's per-release annotations (not its creation mark or history)."""
    return {k for k in annotations if k.startswith(naming.ANNOTATION_PREFIX)
            and k not in (naming.CREATED_BY_RUN, naming.HISTORY)}


def set_release(workload: Workload, obj: dict, release: ApplyRelease | ReleaseSnapshot,
                config_hash: str) -> bool:
    """Change `obj` (as read) to run `release`; False, and `obj` untouched, when it
    already does. A snapshot is put back exactly: Kepler's annotations it did not have
    are removed too."""
    template = workload.template(obj)
    c = template["spec"]["containers"][0]
    tmpl_ann = template.setdefault("metadata", {}).get("annotations") or {}
    meta_ann = obj["metadata"].get("annotations") or {}
    if isinstance(release, ReleaseSnapshot):
        stale = (_release_keys(meta_ann) | _release_keys(tmpl_ann)) - set(release.annotations)
        stale.discard(naming.CONFIG_HASH)
    else:
        stale = set()
    env = [{"name": k, "value": v} for k, v in sorted(release.env.items())]
    resources = None if release.resources is None else manifests.resources_block(release.resources)
    if (c.get("image") == release.image and workload.at_scale(obj, release.replicas)
            and tmpl_ann.get(naming.CONFIG_HASH) == config_hash
            and (c.get("env") or []) == env
            and (resources is None or c.get("resources") == resources)
            and (release.pod is None or covers(shape_of(template).model_dump(),
                                               release.pod.model_dump()))
            and not stale):
        return False
    c["image"], c["env"] = release.image, env
    if release.pod is not None:
        set_shape(template, release.pod)
    if resources is not None:
        c["resources"] = resources
    workload.set_scale(obj, release.replicas)
    template["metadata"]["annotations"] = {
        **{k: v for k, v in tmpl_ann.items() if k not in stale}, **release.annotations,
        naming.CONFIG_HASH: config_hash}
    obj["metadata"]["annotations"] = {
        **{k: v for k, v in meta_ann.items() if k not in stale}, **release.annotations}
    return True


def apply_config(cluster: Cluster, target: ReleaseTarget, config: dict[str, str]) -> None:
    """Create the service's ConfigMap, or bring its data up to `config`."""
    name = naming.config_map_name(target.name())  # a canary's own, beside the service's
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


def own_record(record: ReleaseRecord) -> None:
    """A run records only its own release (a workflow run, asking through its activity)."""
    run = calling_run()
    if run is not None and record.release_id != f"{run.workflow_id}/{run.run_id}":
        raise non_retryable("Unauthorized", f"refused by the worker: run {run.run_id} of "
                            f"{run.workflow_id} may record only its own release, not "
                            f"{record.release_id!r}")


class ReleaseActivities(ClusterActivities):
    """Snapshot, apply and restore a release on one kind of workload; a subclass sets
    `workload` and names the activities."""
    workload: Workload

    def _snapshot(self, target: ReleaseTarget) -> ReleaseSnapshot:
        """What the workload runs now: image, config, resources, env and Kepler's
        annotations, enough to put it back exactly."""
        cluster = self.clusters(target.env)
        obj = cluster.get(self.workload.kind, target.namespace, target.name())  # rbac: Deployment, CronJob
        if obj is None:
            return ReleaseSnapshot(target=target)
        c = self.workload.container(obj)
        cm = cluster.get("ConfigMap", target.namespace, naming.config_map_name(target.name()))
        annotations = obj["metadata"].get("annotations") or {}
        return ReleaseSnapshot(
            target=target, exists=True, image=c.get("image", ""),
            replicas=self.workload.replicas(obj),
            annotations={k: v for k, v in annotations.items()
                         if k.startswith(naming.ANNOTATION_PREFIX)
                         and k not in (naming.CREATED_BY_RUN, naming.HISTORY)},
            history=history_of(annotations), pod=shape_of(self.workload.template(obj)),
            config=(cm.get("data") or {}) if cm else None,
            resources=resources_of(c) or Resources(),
            env={e["name"]: e.get("value", "") for e in c.get("env") or []},
        )

    def _apply(self, release: ApplyRelease | ReleaseSnapshot) -> ApplyResult:
        """The check, then config (the workload's own ConfigMap: a canary's is not the
        primary's), then the workload; nothing is written when both already match, and
        nothing at all when the check refuses. A restore puts back what was (the worker
        checked its seal: activities/authority.py)."""
        target = release.target
        cluster = self.clusters(target.env)
        live = cluster.get(self.workload.kind, target.namespace, target.name())  # rbac: Deployment, CronJob
        if isinstance(release, ApplyRelease):
            if live is None:
                raise non_retryable("NotFound", f"{self.workload.kind} {target.namespace}/"
                                    f"{target.name()} does not exist: create the service first "
                                    "(kepler service create)")
            authorize(self.platform, release, history_of(live["metadata"].get("annotations") or {}))
        if release.config is not None:
            apply_config(cluster, target, release.config)
        config_hash = manifests.config_hash(release.config or {})
        changed = False

        def change(obj: dict) -> bool:
            nonlocal changed
            if isinstance(release, ApplyRelease) and obj is not live:  # changed meanwhile: again
                authorize(self.platform, release, history_of(obj["metadata"].get("annotations") or {}))
            if not set_release(self.workload, obj, release, config_hash):
                return False
            changed = True
            return True

        written = read_modify_write(cluster, self.workload.kind, target.namespace, target.name(),
                                    change, live)  # rbac: Deployment, CronJob
        return ApplyResult(changed=changed, generation=written["metadata"].get("generation", 0))

    def _record(self, req: RecordRelease, live: dict | None = None) -> bool:
        """Put `req.record` at the head of the workload's release history (idempotent: a
        retry finds it there already); `live`: the workload as just read, if it was."""
        t = req.target
        own_record(req.record)

        def change(obj: dict) -> bool:
            if self.workload.container(obj).get("image") != req.record.image:
                raise non_retryable("Unauthorized", f"refused by the worker: {t.name()} in "
                                    f"{t.namespace} does not run {req.record.image}: only what "
                                    "is live is recorded")
            annotations = obj["metadata"].setdefault("annotations", {}) or {}
            history = history_of(annotations)
            if history and history[0].release_id == req.record.release_id:
                return False
            history = [req.record, *history][:naming.HISTORY_LENGTH]
            annotations[naming.HISTORY] = json.dumps(
                [r.model_dump(mode="json", exclude_none=True) for r in history], separators=(",", ":"))
            obj["metadata"]["annotations"] = annotations
            return True

        if live is None:
            live = self.clusters(t.env).get(self.workload.kind,  # rbac: Deployment, CronJob
                                            t.namespace, t.name())
        if live is None:
            raise non_retryable("NotFound", f"{self.workload.kind} {t.namespace}/{t.name()} "
                                "disappeared before its release was recorded")
        read_modify_write(self.clusters(t.env), self.workload.kind,  # rbac: Deployment, CronJob
                          t.namespace, t.name(), change, live)
        return True

    def _restore(self, previous: ReleaseSnapshot) -> ApplyResult:
        if not previous.exists:
            return ApplyResult(changed=False, generation=0)
        return self._apply(previous)
