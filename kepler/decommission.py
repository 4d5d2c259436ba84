"""Contracts of the Decommission workflow and its activities."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kepler.identity import AllowedSigners, SignedStatement
from kepler.models import Model, Outcome
from kepler.settings import ApprovalPolicy, DecommissionPolicy
from kepler.validation import UserName


class EnvTarget(Model):
    env: str
    namespace: str
    service: str


class DecommissionPlan(Model):
    """From the worker's kepler.yaml: who approves, and where the service lives."""
    approval: ApprovalPolicy
    targets: list[EnvTarget]
    policy: DecommissionPolicy = Field(default_factory=DecommissionPolicy)
    builder: str = "jenkins"  # with the docker builder there is no Jenkins job to delete
    signers: AllowedSigners = Field(default_factory=AllowedSigners)  # who may sign what, now


class RunningQuery(Model):
    service: str
    envs: list[str]
    exclude: str = ""  # the asking workflow's own id


class Footprint(Model):
    """What phase 1 changes in one environment, recorded before it changes it, so a
    restore puts it back exactly."""
    target: EnvTarget
    virtual_services: list[dict[str, Any]] = Field(default_factory=list)  # clean manifests
    replicas: dict[str, int] = Field(default_factory=dict)  # Deployment -> replicas before
    suspended: dict[str, bool] = Field(default_factory=dict)  # CronJob -> suspend before
    seal: str = ""  # the worker's (activities/authority.py): only its own run restores it


class SchedulePause(Model):
    """The service's release schedules (kepler/schedules.py) in these environments; `note`
    marks those this decommission paused, so a retry or a restore knows them."""
    service: str
    envs: list[str]
    note: str = Field("", max_length=300)


class TeardownRequest(Model):
    target: EnvTarget
    part: Literal["istio", "kubernetes"]
    delete_namespace: bool = Field(False, description=(
        "decommission.delete_namespaces: delete the namespace when Kepler made it and it is "
        "left empty (the worker then needs the kepler-namespace-cleanup role)"))


class TeardownResult(Model):
    deleted: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)  # namespaces left in place, and why


class RestoreRequest(Model):
    """The argument of the restore update: a signed statement of `restore` for exactly the
    soaking run, by its verified requester or a decommission approver."""
    requested_by: UserName
    reason: str = Field("", max_length=500)
    signed: SignedStatement | None = None


class DecommissionReport(Model):
    service: str
    outcome: Outcome
    recorded: list[Footprint] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    remaining: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)  # namespaces phase 2 left in place, and why
    restored_by: str = ""
    error: str = ""
