"""What workflows, activities and starters exchange: operation requests, reports and
status (the service spec is kepler/spec.py) (docs/architecture.md describes the whole).

Every field is validated here, once; a bad value is refused before any side
effect with a message naming the field and the rule.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kepler import promql, validation
from kepler.images import DIGEST_RE
from kepler.validation import Duration, EnvName, GitRef, ServiceName, UserName
from kepler.workloads import Model
from kepler.identity import SignedStatement
from kepler.freeze import FreezeOptions
from kepler.requests import EnvRequest, SignedRequest, Subject
from kepler.spec import ServiceSpec, Strategy
from kepler.previews import PreviewState


# --- requests ------------------------------------------------------------------------------

class Operation(str, Enum):
    CREATE = "create"
    RELEASE = "release"
    ROLLBACK = "rollback"
    CANARY = "canary"
    DECOMMISSION = "decommission"
    JOB = "job"  # a run of a cronjob service, now (kepler job run)
    ALERT = "alert"  # what Kepler did about a firing alert (POST /alertmanager)
    TRAIN = "train"
    SCALE = "scale"
    RESOURCES = "resources"
    FREEZE = "freeze"  # an ad-hoc freeze of one environment (kepler/freeze.py)
    SCHEDULED_RELEASE = "scheduled-release"  # a release schedule's fire (kepler/schedules.py)
    PROMOTION = "promotion"  # an automatic promotion (kepler/promotion.py)
    PREVIEW = "preview"  # a merge request's preview environment (kepler/previews.py)


class CreateServiceRequest(SignedRequest):
    spec: ServiceSpec
    adopt: bool = Field(False, description=(
        "take over objects Kepler did not create in the service's namespaces (a platform "
        "admin's request only; without it, such an object refuses the create)"))

    def subject(self) -> Subject:
        return Subject(self.spec.name, "all", "", self.requested_by)


class ReleaseRequest(FreezeOptions, EnvRequest):
    ref: GitRef | None = Field(None, description="the git ref to release; or from_env")
    from_env: EnvName | None = Field(None, description=(
        "promote: release exactly the digest and commit live and healthy in this environment "
        "(with image and commit: only if those are what is live there)"))
    train_approved: bool = Field(False, description=(
        "set by a ReleaseTrain whose own gate passed; honoured only when this release "
        "runs as that train's child, never on a release started on its own"))
    commit: str = Field("", pattern=r"^([0-9a-f]{40})?$", description=(
        "the exact commit to release (a train's member: what the train resolved and had "
        "approved); empty: resolve `ref` now"))
    image: str = Field("", max_length=400, pattern=r"^([^\s@]+@sha256:[0-9a-f]{64})?$", description=(
        "the exact image to release, by digest, with `commit` (a train's member: the digest "
        "its approvers saw); empty: the commit's image, built if missing"))
    train_approvals: list[SignedStatement] = Field(default_factory=list, max_length=20,
                                                   description=(
        "a train member's: the train gate's signed approvals, which must cover this commit "
        "and digest"))
    train_request: SignedStatement | None = Field(None, description=(
        "a train member's: the train's signed request (who asked for the train)"))
    strategy: Strategy | None = Field(None, description=(
        "rolling or blue-green; none: as the service's spec says for this environment"))

    def version(self) -> str:
        return self.ref or f"from {self.from_env}"

    @model_validator(mode="after")
    def _pinned_together(self) -> "ReleaseRequest":
        if self.image and not self.commit:
            raise ValueError("image: a pinned image needs the commit it was built from (commit)")
        if (self.ref is None) == (self.from_env is None):
            raise ValueError("ref: give a git ref (--ref) or an environment to promote from "
                             "(--from), one of the two")
        if self.from_env is not None and self.from_env == self.env:
            raise ValueError("from_env: promotes another environment's release, not its own")
        if self.from_env is not None and self.commit and not self.image:
            raise ValueError("commit: a promotion pins the digest and commit together, or neither")
        return self


class RollbackRequest(EnvRequest):
    target: str = Field("previous", description="previous | a version (git ref) | sha256:DIGEST")

    def version(self) -> str:
        return self.target

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value == "previous" or DIGEST_RE.fullmatch(value):
            return value
        if value.startswith("sha256:"):
            raise ValueError("a digest target must be sha256: followed by 64 hex digits")
        return validation.git_ref(value)


class MetricCheck(Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    query: str | None = Field(None, max_length=4000, description="PromQL; None for a built-in")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> "MetricCheck":
        if self.min is None and self.max is None:
            raise ValueError("a metric check needs a min, a max or both")
        return self


class MirrorStage(Model):
    """A canary's first stage: the canary gets a copy of `percent` % of the live traffic (Istio
    mirroring; its answers are discarded) for `duration`, its own metrics analysed under that
    load, before any live traffic moves to it."""
    percent: int = Field(100, ge=1, le=100)
    duration: Duration = Field(timedelta(minutes=5), description="10s to 24h")

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(hours=24):
            raise ValueError("must be between 10s and 24h")
        return value


class CanaryRequest(FreezeOptions, EnvRequest):
    ref: GitRef
    steps: list[int] | None = None
    step_weight: int = Field(10, ge=1, le=100)
    max_weight: int = Field(50, ge=1, le=100)
    interval: Duration = timedelta(minutes=1)
    metrics: list[MetricCheck] = Field(default_factory=list, description=(
        "checks added to the built-ins; a check named like a built-in without a query "
        "changes that built-in's thresholds"))
    failure_limit: int = Field(5, ge=1, le=100)
    no_data: Literal["fail", "skip", "halt"] = "fail"
    query_error_limit: int = Field(3, ge=1, le=100, description=(
        "analysis rounds in a row whose queries fail (after retries) before each further "
        "one counts as a failed check"))
    approve_promotion: bool = False
    max_duration: Duration = Field(timedelta(days=7), description=(
        "the whole canary's deadline: past it, traffic goes back to stable"))
    rounds_per_run: int = Field(100, ge=1, le=1000, description=(
        "analysis rounds per workflow run before continue-as-new (bounded history)"))
    mirror: MirrorStage | None = Field(None, description=(
        "mirror live traffic to the canary first (refused for a service whose spec says "
        "idempotent: false)"))
    release: ReleaseRequest | None = Field(None, description=(
        "a blue-green release: the signed release request that handed over to this run "
        "(its own continue-as-new); its settings are the spec's blue_green, never these"))
    commit: str = Field("", pattern=r"^([0-9a-f]{40})?$", description=(
        "with release: the commit the release resolved (its ref is not resolved again)"))

    def version(self) -> str:
        return self.ref

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=10):
            raise ValueError("must be at least 10s")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value or any(not 0 < w <= 100 for w in value):
                raise ValueError("must be weights between 1 and 100")
            if value != sorted(set(value)):
                raise ValueError("must be strictly increasing")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[MetricCheck]) -> list[MetricCheck]:
        names = [m.name for m in value]
        if len(names) != len(set(names)):
            raise ValueError("metric names must be unique")
        for m in value:
            if m.query is None and m.name not in promql.THRESHOLDS:
                raise ValueError(f"metric {m.name!r} needs a query (built-ins: "
                                 f"{', '.join(promql.THRESHOLDS)})")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "CanaryRequest":
        if not self.steps and self.max_weight < self.step_weight:
            raise ValueError("max_weight must be >= step_weight")
        if self.max_duration < self.interval * 2:
            raise ValueError("max_duration must be at least two intervals")
        if self.mirror is not None and self.mirror.duration < self.interval:
            raise ValueError("mirror.duration must be at least one interval (one analysis round)")
        if self.mirror is not None and self.max_duration < self.mirror.duration + self.interval * 2:
            raise ValueError("max_duration must be at least mirror.duration and two intervals")
        # the mirror stage runs in one workflow run: nothing of it is carried across
        # continue-as-new (whose state is sealed as the canary's version wrote it)
        if self.mirror is not None and self.mirror.duration > self.interval * self.rounds_per_run:
            raise ValueError("mirror.duration must be at most rounds_per_run intervals "
                             f"({self.rounds_per_run} x {self.interval.total_seconds():g}s)")
        return self

    def weights(self) -> list[int]:
        if self.steps:
            return list(self.steps)
        return list(range(self.step_weight, self.max_weight + 1, self.step_weight))

    def effective_metrics(self) -> list[MetricCheck]:
        """The built-ins (with any threshold overrides), then the custom checks."""
        given = {m.name: m for m in self.metrics}
        checks = []
        for name, (bound, limit) in promql.THRESHOLDS.items():
            checks.append(given.pop(name, None) or MetricCheck(name=name, **{bound: limit}))
        return checks + list(given.values())


class DecommissionRequest(SignedRequest):
    service: ServiceName
    soak: Duration = timedelta(hours=24)  # at least the platform's decommission.min_soak

    def subject(self) -> Subject:
        return Subject(self.service, "all", "", self.requested_by)


class ApprovalDecision(Model):
    approver: UserName
    comment: str = Field("", max_length=500)
    signed: SignedStatement | None = Field(None, description=(
        "the approver's signed statement of this decision, for this run and these digests"))


# --- status and reports --------------------------------------------------------------------

Outcome = Literal["running", "succeeded", "failed", "rolled_back", "rejected", "expired",
                  "cancelled", "soaking", "restored", "aborted", "skipped", "stale"]


class StepRecord(Model):
    name: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: Literal["running", "done", "failed", "skipped", "undone"] = "running"
    detail: str = ""


class Approval(Model):
    """One recorded decision at a gate: who, when, what they said."""
    approver: str
    at: datetime
    verdict: Literal["approve", "reject"] = "approve"
    comment: str = ""
    verified: bool = False  # its signature verified against the platform's allowed signers


class PendingApproval(Model):
    env: str
    approvers: list[str]
    requested_by: str
    min_approvals: int = 1
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    deadline: datetime
    # what an approval must name, exactly (a signed decision covers these)
    operation: str = ""
    service: str = ""
    workflow_id: str = ""
    run_id: str = ""
    digests: list[str] = Field(default_factory=list)
    commits: list[str] = Field(default_factory=list)
    gate: int = 0  # the run's first gate is 1; a decision names the gate it decides
    valid_for: timedelta | None = None  # a decision signed longer ago is refused (None: before)


class CheckStatus(Model):
    """One analysis check of a canary: its threshold, last value and failures."""
    name: str
    threshold: str
    last_value: float | None = None
    last_result: Literal["pending", "passed", "failed", "no_data", "skipped", "error"] = "pending"
    failures: int = 0


class CanaryProgress(Model):
    """What a canary's `status` adds: where the traffic is and what it waits on."""
    weights: list[int]
    step: int = 0  # how many of `weights` have been reached; 0 before the first shift
    weight: int = 0
    interval: timedelta
    failed_checks: int = 0
    failure_limit: int
    query_errors: int = 0  # analysis rounds in a row whose queries failed
    paused: bool = False
    paused_by: str = ""
    waiting_on: str = ""
    next_analysis_at: datetime | None = None
    rounds: int = 0
    run: int = 1  # workflow runs so far (continue-as-new keeps each run's history bounded)
    checks: list[CheckStatus] = Field(default_factory=list)
    last_failure: str = ""
    strategy: Literal["canary", "blue-green"] = "canary"
    switched_at: datetime | None = None  # blue-green: when all live traffic moved to it
    rollback_until: datetime | None = None  # blue-green: the end of its rollback window


class OperationStatus(Model):
    operation: Operation
    service: str
    env: str
    requested_by: str
    requester_verified: bool = False  # the request's signature verified (kepler/identity.py)
    stage: str = "starting"
    version: str = ""
    steps: list[StepRecord] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    outcome: Outcome = "running"
    error: str = ""
    undone: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list)  # decided, every gate of the run
    bad_input: bool = False  # ended before any change: the input breaks a rule (CLI exit 2)
    refused: bool = False  # ended before any change: the requester may not do this (exit 3)
    canary: CanaryProgress | None = None
    preview: PreviewState | None = None


class ReleaseReport(Model):
    """A release's report; a blue-green release ends as the Canary run it handed over to,
    whose report (CanaryReport) has more fields, ignored here."""
    model_config = ConfigDict(extra="ignore")
    service: str
    env: str
    outcome: Outcome
    commit: str = ""
    image: str = ""
    previous_image: str = ""
    error: str = ""
    undone: list[str] = Field(default_factory=list)
    approved_by: list[str] = Field(default_factory=list)
