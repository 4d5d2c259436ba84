"""The one registry of Kepler's operations: for each workflow type, the module that
defines it, the operation name users see (`KeplerOperation`), its request and result
types and which lock its id takes. The worker, the starters and the train read it;
nothing else keeps a list of workflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kepler.alerts import AlertActionRequest, AlertOutcome
from kepler.canary import CanaryReport
from kepler.decommission import DecommissionReport
from kepler.freeze import FreezeReport, FreezeRequest
from kepler.jobs import JobReport, RunJobRequest
from kepler.promotion import AutoPromotionReport, AutoPromotionRequest
from kepler.models import (
    CanaryRequest, CreateServiceRequest, DecommissionRequest, ReleaseReport, ReleaseRequest,
    RollbackRequest,
)
from kepler.scale import ResourcesRequest, ScaleReport, ScaleRequest
from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
from kepler.train import TrainReport, TrainRequest

# "env": `<service>@<env>`; "service": `<service>@all`; "own": the starter names it
# (an alert's fingerprint, a schedule's fire, an automatic promotion), started once;
# "named": an id of its own taken again once free (`freeze@<env>`).
Lock = Literal["env", "service", "own", "named"]


@dataclass(frozen=True)
class OperationType:
    workflow: str  # the Temporal workflow type
    module: str  # under workflows/
    operation: str  # KeplerOperation, the CLI's word for it
    request: type
    result: type
    lock: Lock


OPERATIONS: tuple[OperationType, ...] = (
    OperationType("CreateService", "create", "create", CreateServiceRequest, ReleaseReport, "service"),
    OperationType("ReleaseVersion", "release", "release", ReleaseRequest, ReleaseReport, "env"),
    OperationType("Rollback", "rollback", "rollback", RollbackRequest, ReleaseReport, "env"),
    OperationType("Canary", "canary", "canary", CanaryRequest, CanaryReport, "env"),
    OperationType("Decommission", "decommission", "decommission", DecommissionRequest,
                  DecommissionReport, "service"),
    OperationType("RunJob", "job", "job", RunJobRequest, JobReport, "env"),
    OperationType("AlertAction", "alert", "alert", AlertActionRequest, AlertOutcome, "own"),
    OperationType("ReleaseTrain", "train", "train", TrainRequest, TrainReport, "env"),
    OperationType("Scale", "scale", "scale", ScaleRequest, ScaleReport, "env"),
    OperationType("SetResources", "scale", "resources", ResourcesRequest, ScaleReport, "env"),
    OperationType("ScheduledRelease", "schedule", "scheduled-release", ScheduledReleaseRequest,
                  ScheduledReleaseReport, "own"),
    OperationType("AutoPromotion", "promotion", "promotion", AutoPromotionRequest,
                  AutoPromotionReport, "own"),
    OperationType("Freeze", "freeze", "freeze", FreezeRequest, FreezeReport, "named"),
)

BY_WORKFLOW = {o.workflow: o for o in OPERATIONS}
BY_REQUEST = {o.request: o for o in OPERATIONS}

# How an operation ended, as its final error's type says (workflows.base.failure);
# a parent (train, schedule) reads a child's outcome from it.
ENDINGS = ("succeeded", "failed", "rolled_back", "cancelled", "rejected", "expired", "aborted")


def error_type(outcome: str) -> str:
    """The ApplicationError type a workflow ending with `outcome` fails with."""
    return "Kepler" + outcome.title().replace("_", "")


OUTCOME_OF_ERROR = {error_type(o): o for o in ENDINGS if o != "succeeded"}


def outcome_of_error(kind: str) -> str:
    return OUTCOME_OF_ERROR.get(kind, "failed")
