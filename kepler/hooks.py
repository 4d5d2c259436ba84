"""Release hooks (`hooks:` in the service spec): what their workflow steps and activities
exchange, and the Job a hook runs as (a pure function, like kepler/manifests.py).

A hook's Job runs the release's image with the release's env and config (its own
ConfigMap, named like the Job: the service's ConfigMap still holds the running version's
config while a pre_deploy hook runs). It is created suspended, gets its ConfigMap (owned by
the Job, so it goes with it), then starts; it is owned by the service's Deployment, so a
decommission removes it, and Kubernetes deletes it a day after it finished. Its pod has no
`app` label: no Service or route ever sends it traffic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kepler import naming
from kepler.manifests import resources_block
from kepler.spec import Resources
from kepler.payloads import Authorization, PodShape, ReleaseTarget
from kepler.workloads import CONFIG_MOUNT, Model

HookKind = Literal["pre_deploy", "post_deploy", "undo"]
HOOK_LABEL = naming.ANNOTATION_PREFIX + "hook"  # on the Job, its pod and its ConfigMap
FINISHED_TTL = 86400  # seconds a finished hook Job (and its log) stays for inspection
CONFIG_VOLUME = "config"


class HookRelease(Model):
    """The release a hook runs with: image by digest, env, config, resources and the pod
    shape (its volumes; ports and probes are left out)."""
    target: ReleaseTarget  # the service's primary Deployment owns the hook's Job
    image: str
    commit: str = ""
    version: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    pod: PodShape = Field(default_factory=PodShape)


class StartHook(Model):
    """Create Job `name` running `command` (idempotent: this run's own Job is kept)."""
    release: HookRelease
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    hook: HookKind
    command: list[str] = Field(min_length=1, max_length=32)
    timeout: int = Field(ge=10, le=3600)
    annotations: dict[str, str] = Field(default_factory=dict)
    authorization: Authorization | None = None


def job_name(service: str, run_id: str, hook: HookKind) -> str:
    """`<service>-<pre-deploy|post-deploy|undo>-<10 hex of the run id>` (<= 63 characters)."""
    return f"{service}-{hook.replace('_', '-')}-{run_id.replace('-', '')[-10:]}"


def hook_job(req: StartHook, run_id: str, owner_uid: str) -> dict[str, Any]:
    """The hook's Job, created suspended (it starts once its ConfigMap exists)."""
    r, ns = req.release, req.release.target.namespace
    labels = {HOOK_LABEL: req.hook, **naming.MANAGED_BY}
    volumes = [dict(v) for v in r.pod.volumes if v.get("name") != CONFIG_VOLUME]
    volumes.insert(0, {"name": CONFIG_VOLUME, "configMap": {"name": req.name}})
    mounts = r.pod.volume_mounts or [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT}]
    container = {
        "name": r.target.service, "image": r.image, "command": list(req.command),
        "env": [{"name": k, "value": v} for k, v in sorted({**r.env, "KEPLER_HOOK": req.hook}.items())],
        "resources": resources_block(r.resources), "volumeMounts": mounts,
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": req.name, "namespace": ns,
            "labels": {"app": r.target.service, **labels},
            "annotations": {**req.annotations, naming.CREATED_BY_RUN: run_id},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": r.target.service, "uid": owner_uid}]},
        "spec": {
            "suspend": True, "backoffLimit": 0, "activeDeadlineSeconds": req.timeout,
            "ttlSecondsAfterFinished": FINISHED_TTL,
            "template": {
                "metadata": {"labels": {**labels, "kepler.dev/service": r.target.service},
                             "annotations": dict(req.annotations)},
                "spec": {"serviceAccountName": r.target.service, "restartPolicy": "Never",
                         "containers": [container], "volumes": volumes}}},
    }


def hook_config_map(req: StartHook, run_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """The release's config for the hook's pod, owned by its Job."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": dict(req.release.config),
            "metadata": {
                "name": req.name, "namespace": req.release.target.namespace,
                "labels": {"app": req.release.target.service, HOOK_LABEL: req.hook,
                           **naming.MANAGED_BY},
                "annotations": {naming.CREATED_BY_RUN: run_id},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                     "name": job["metadata"]["name"],
                                     "uid": job["metadata"]["uid"]}]}}
