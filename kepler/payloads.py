"""Inputs and outputs of activities: the contract between workflows and the I/O layer."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from kepler import naming
from kepler.models import Model
from kepler.spec import Hook, Resources
from kepler.promotion import PromotionPath
from kepler.freeze import ActiveFreeze, EnvironmentFreeze
from kepler.settings import ApprovalPolicy, Bounds
from kepler.identity import AllowedSigners, SignedStatement

# --- platform policy (read by the worker from its own kepler.yaml) -------------------------


class EnvironmentPolicy(Model):
    env: str
    namespace: str
    approval: ApprovalPolicy
    rollback_approval: ApprovalPolicy
    bounds: Bounds
    bake_time: timedelta
    rollout_timeout: timedelta
    verify_with_prometheus: bool = False
    verify_no_data: Literal["fail", "skip"] = "fail"
    builder: Literal["jenkins", "docker"] = "jenkins"
    registry_host: str = ""
    image_repository: str = ""  # <group>/<service> inside the registry
    signers: AllowedSigners = Field(default_factory=AllowedSigners)  # who may sign what, now
    admins: list[str] = Field(default_factory=list)  # may create over a service they do not own
    promotion: PromotionPath | None = None  # where this environment's releases come from
    auto_promote_to: list[str] = Field(default_factory=list)  # paths from here with auto: true
    freeze: EnvironmentFreeze | None = None  # its freeze windows (kepler/freeze.py)

    def image(self, tag: str) -> str:
        return f"{self.registry_host}/{self.image_repository}:{tag}"


class PolicyQuery(Model):
    service: str
    env: str


class PolicyNow(Model):
    """The environment's policy and the ad-hoc freezes in force on it, read together: the
    first check of a release (an operation's later checks look at the freezes again)."""
    policy: EnvironmentPolicy
    adhoc_freezes: list[ActiveFreeze] = Field(default_factory=list)


# --- GitLab --------------------------------------------------------------------------------


class EnsureProject(Model):
    service: str
    template: str
    spec_yaml: str
    run_id: str


class ProjectRef(Model):
    project_id: int
    path: str
    http_url: str
    created: bool = False


class ExistingService(Model):
    """A GitLab project that is there before a create: whose it is, by its spec."""
    path: str
    owners: list[str] = Field(default_factory=list)
    team: str = ""


class ResolveRef(Model):
    service: str
    ref: str


class Commit(Model):
    sha: str
    short_id: str
    title: str = ""
    committed_at: datetime | None = None  # GitLab's committed_date (lead time: kepler metrics)


class ReadSpec(Model):
    service: str
    sha: str


class EnsureHook(Model):
    project_id: int


class UndoCreated(Model):
    """Undo a create: delete the object only if the run `run_id` created it."""
    service: str
    run_id: str
    env: str = ""
    kind: str = ""
    namespace: str = ""
    name: str = ""


# --- build and registry --------------------------------------------------------------------


class EnsureJob(Model):
    service: str
    repo_url: str
    run_id: str


class BuildRequest(Model):
    service: str
    commit: str
    image: str  # repository:tag, where the build pushes


class BuildResult(Model):
    number: int
    result: str
    duration_ms: int = 0
    log_tail: str = ""
    digest: str = ""  # the pushed manifest digest, when the builder knows it


class ImageQuery(Model):
    repository: str
    reference: str  # tag or digest


# --- Kubernetes and Istio ------------------------------------------------------------------


class ApplyObjects(Model):
    env: str
    manifests: list[dict[str, Any]]
    run_id: str


class AdoptedObject(Model):
    """An object that existed before a create, as far as the create may change it: put
    back exactly if the create is undone (none of these kinds holds a secret)."""
    env: str
    kind: str
    namespace: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    seal: str = ""  # the worker's (activities/authority.py): only its own run restores it


class Applied(Model):
    kind: str
    namespace: str
    name: str
    created: bool


class ReleaseTarget(Model):
    env: str
    namespace: str
    service: str
    deployment: str = ""

    def name(self) -> str:
        return self.deployment or self.service


class ReleaseRecord(Model):
    """One release that went live and healthy (kepler.dev/history on the workload)."""
    image: str  # by digest
    commit: str = ""
    version: str = ""
    at: datetime
    release_id: str = ""  # <workflow id>/<run id>
    requested_by: str = ""
    undo: Hook | None = None  # its pre_deploy hook's undo: a rollback away from it runs it
    break_glass: str = ""  # the reason, when it went through a freeze (kepler/freeze.py)


def history_of(annotations: dict[str, str]) -> list[ReleaseRecord]:
    """Kepler's release history on a workload, newest first; a hand-edited, unreadable one
    counts as none (the ReplicaSet history is the fallback), never as an error."""
    try:
        return [ReleaseRecord.model_validate(r) for r in json.loads(annotations[naming.HISTORY])]
    except (KeyError, ValueError, TypeError):
        return []


class ReleaseSnapshot(Model):
    """What ran before a change: enough to put it back exactly."""
    target: ReleaseTarget
    exists: bool = False
    image: str = ""
    replicas: int = 0
    annotations: dict[str, str] = Field(default_factory=dict)
    config: dict[str, str] | None = None
    resources: Resources | None = None
    env: dict[str, str] = Field(default_factory=dict)
    history: list[ReleaseRecord] = Field(default_factory=list)  # newest first
    pod: PodShape | None = None
    seal: str = ""  # the worker's (activities/authority.py): only its own run restores it


class RecordRelease(Model):
    target: ReleaseTarget
    record: ReleaseRecord


class PodShape(Model):
    """The parts of a pod template a spec decides besides image, env and resources
    (port, readiness probe, volumes and the config mount), as Kubernetes JSON: a release
    applies them, a snapshot records them, a restore puts them back."""
    ports: list[dict[str, Any]] = Field(default_factory=list)
    readiness_probe: dict[str, Any] | None = None
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)


class Authorization(Model):
    """What lets a change reach its environment, checked again by the activity that applies
    it (activities/authorization.py) against the platform's own policy and signers."""
    gate: Literal["approval", "rollback_approval", "history"] = "approval"  # which rule
    request: SignedStatement | None = None  # the requester's signed request
    approvals: list[SignedStatement] = Field(default_factory=list, max_length=20)
    first_run_id: str = ""  # the first run of a continued workflow (a canary's gate was there)
    train: str = ""  # a train member: the train's workflow id, whose run approved it


class ApplyRelease(Model):
    target: ReleaseTarget
    image: str  # by digest
    replicas: int
    config: dict[str, str]
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources
    annotations: dict[str, str]
    port: int = 8080
    health_path: str = "/healthz"
    pod: PodShape | None = None  # None (payloads from before): leave the shape as it is
    authorization: Authorization | None = None  # None: a run from before this check


class ApplyResult(Model):
    changed: bool
    generation: int


class WaitRollout(Model):
    target: ReleaseTarget
    generation: int
    timeout: timedelta


class RolloutResult(Model):
    ready_replicas: int
    revision: str = ""


class DeployRelease(Model):
    """A release's apply and its rollout wait in one activity; with `record`, when nothing
    comes between the rollout and the record (no post_deploy hook, bake or verify), the
    record too, stamped when the rollout was seen complete."""
    release: ApplyRelease
    timeout: timedelta  # of the rollout
    record: ReleaseRecord | None = None


class DeployResult(Model):
    applied: ApplyResult
    rollout: RolloutResult
    recorded: bool = False


class Revision(Model):
    revision: int
    image: str
    commit: str = ""
    release_id: str = ""
    requested_by: str = ""


class RouteWeights(Model):
    env: str
    namespace: str
    service: str
    stable: int = 100
    canary: int = 0
    canary_header: bool = False
    mirror: int = Field(0, ge=0, le=100, description="% of the live traffic copied to the canary")
    authorization: Authorization | None = None  # checked when traffic (or a copy) goes to the canary


class VerifyRelease(Model):
    env: str
    namespace: str
    service: str
    workload: str
    min_success_rate: float = 99.0
    window: str = "1m"


class VerifyResult(Model):
    verdict: Literal["passed", "failed", "no_data", "skipped"]
    detail: str = ""


class ScaleDeployment(Model):
    """Set a Deployment's replicas; a Deployment that does not exist is left alone."""
    target: ReleaseTarget
    replicas: int = Field(ge=0, le=1000)
