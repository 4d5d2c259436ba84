"""The one registry of Kepler's operations: for each workflow type, the module that
defines it, the operation name users see (`KeplerOperation`), its request and result
types and which lock its id takes. The worker, the starters and the train read it;
nothing else keeps a list of workflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from kepler.alerts import AlertActionRequest, AlertOutcome
from kepler.canary import CanaryControl, CanaryReport
from kepler.decommission import DecommissionReport, RestoreRequest
from kepler.freeze import ActiveFreeze, FreezeReport, FreezeRequest, UnfreezeRequest
from kepler.jobs import JobReport, RunJobRequest
from kepler.promotion import AutoPromotionReport, AutoPromotionRequest
from kepler.previews import MergeRequestEvent, PreviewReport, PreviewRequest
from kepler.models import (
    ApprovalDecision, CanaryRequest, CreateServiceRequest, DecommissionRequest, OperationStatus,
    ReleaseReport, ReleaseRequest, RollbackRequest,
)
from kepler.scale import ResourcesRequest, ScaleReport, ScaleRequest
from kepler.schedules import ScheduledReleaseReport, ScheduledReleaseRequest
from kepler.train import TrainReport, TrainRequest

A = TypeVar("A")
R = TypeVar("R")


# --- the messages a running operation takes: typed names, declared here only ---------------
# Workflows declare their handlers with these names (`@workflow.update(name=APPROVE.name)`),
# clients send them through kepler.clients.operations (query/update/signal); a test
# (tests/test_layers.py) refuses a handler or message named by a string anywhere else.

@dataclass(frozen=True)
class Query(Generic[R]):
    name: str
    result: Any  # type[R]; `list[X]` is not a `type` to mypy


@dataclass(frozen=True)
class Update(Generic[A, R]):
    name: str
    arg: type[A]
    result: type[R]


@dataclass(frozen=True)
class Signal(Generic[A]):
    name: str
    arg: type[A]


STATUS: Query[OperationStatus] = Query("status", OperationStatus)  # every operation's
APPROVE = Update("approve", ApprovalDecision, str)  # a gated operation's gate
REJECT = Update("reject", ApprovalDecision, str)
PAUSE = Update("pause", CanaryControl, str)  # a canary's controls
RESUME = Update("resume", CanaryControl, str)
PROMOTE = Update("promote", CanaryControl, str)
ABORT = Update("abort", CanaryControl, str)
MERGE_REQUEST = Signal("merge_request", MergeRequestEvent)  # a preview's: look at the MR again
CANARY_CONTROLS = {u.name: u for u in (PAUSE, RESUME, PROMOTE, ABORT)}
RESTORE = Update("restore", RestoreRequest, str)  # a soaking decommission's
DECOMMISSION_REPORT: Query[DecommissionReport | None] = Query("decommission", DecommissionReport)
UNFREEZE = Update("unfreeze", UnfreezeRequest, str)  # an ad-hoc freeze's
FREEZE_IN_FORCE: Query[list[ActiveFreeze]] = Query("freeze", list[ActiveFreeze])
TRAIN_REPORT: Query[TrainReport] = Query("report", TrainReport)  # a train's members
OFFER = Signal("offer", AutoPromotionRequest)  # a newer release for an automatic promotion
PROMOTION_REPORT: Query[AutoPromotionReport] = Query("promotion", AutoPromotionReport)
SCHEDULED_REPORT: Query[ScheduledReleaseReport] = Query("fire", ScheduledReleaseReport)

# "env": `<service>@<env>`; "service": `<service>@all`; "own": the starter names it
# (an alert's fingerprint, a schedule's fire, an automatic promotion), started once;
# "named": an id of its own taken again once free (`freeze@<env>`).
Lock = Literal["env", "service", "own", "named"]


Message = Query[Any] | Update[Any, Any] | Signal[Any]


@dataclass(frozen=True)
class OperationType:
    """One operation's contract: its workflow, request and report, its lock, whether its
    policy can gate it (then it takes approve and reject), and the messages it takes
    besides STATUS. tests/test_layers.py holds each workflow to it."""
    workflow: str  # the Temporal workflow type
    module: str  # under workflows/
    operation: str  # KeplerOperation, the CLI's word for it
    request: type
    result: type
    lock: Lock
    gated: bool = False
    messages: tuple[Message, ...] = ()

    @property
    def handlers(self) -> frozenset[str]:
        """Every message name its workflow declares."""
        gate = (APPROVE, REJECT) if self.gated else ()
        return frozenset(m.name for m in (STATUS, *gate, *self.messages))


CREATE_SERVICE = OperationType("CreateService", "create", "create", CreateServiceRequest,
                               ReleaseReport, "service")
RELEASE_VERSION = OperationType("ReleaseVersion", "release", "release", ReleaseRequest,
                                ReleaseReport, "env", gated=True)
ROLLBACK = OperationType("Rollback", "rollback", "rollback", RollbackRequest, ReleaseReport, "env",
                         gated=True)
CANARY = OperationType("Canary", "canary", "canary", CanaryRequest, CanaryReport, "env", gated=True,
                       messages=(PAUSE, RESUME, PROMOTE, ABORT))
DECOMMISSION = OperationType("Decommission", "decommission", "decommission", DecommissionRequest,
                             DecommissionReport, "service", gated=True,
                             messages=(RESTORE, DECOMMISSION_REPORT))
RUN_JOB = OperationType("RunJob", "job", "job", RunJobRequest, JobReport, "env")
ALERT_ACTION = OperationType("AlertAction", "alert", "alert", AlertActionRequest, AlertOutcome,
                             "own")
RELEASE_TRAIN = OperationType("ReleaseTrain", "train", "train", TrainRequest, TrainReport, "env",
                              gated=True, messages=(TRAIN_REPORT,))
SCALE = OperationType("Scale", "scale", "scale", ScaleRequest, ScaleReport, "env", gated=True)
SET_RESOURCES = OperationType("SetResources", "scale", "resources", ResourcesRequest, ScaleReport,
                              "env", gated=True)
SCHEDULED_RELEASE = OperationType("ScheduledRelease", "schedule", "scheduled-release",
                                  ScheduledReleaseRequest, ScheduledReleaseReport, "own",
                                  messages=(SCHEDULED_REPORT,))
AUTO_PROMOTION = OperationType("AutoPromotion", "promotion", "promotion", AutoPromotionRequest,
                               AutoPromotionReport, "own", messages=(OFFER, PROMOTION_REPORT))
FREEZE = OperationType("Freeze", "freeze", "freeze", FreezeRequest, FreezeReport, "named",
                       messages=(UNFREEZE, FREEZE_IN_FORCE))
PREVIEW = OperationType("Preview", "preview", "preview", PreviewRequest, PreviewReport, "named",
                        messages=(MERGE_REQUEST,))

OPERATIONS: tuple[OperationType, ...] = (
    CREATE_SERVICE, RELEASE_VERSION, ROLLBACK, CANARY, DECOMMISSION, RUN_JOB, ALERT_ACTION,
    RELEASE_TRAIN, SCALE, SET_RESOURCES, SCHEDULED_RELEASE, AUTO_PROMOTION, FREEZE, PREVIEW,
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
