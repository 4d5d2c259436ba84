"""kepler/clients/operations.py without a server: each operation's id, summary and the
search attributes it starts with (the one place they are written)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kepler.promotion import AutoPromotionRequest
from kepler.clients import operations as ops
from kepler import search_attributes as sa
from kepler.alerts import AlertActionRequest
from kepler.models import CreateServiceRequest, DecommissionRequest, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.contracts import OPERATIONS
from kepler.schedules import ScheduledReleaseRequest
from kepler.train import TrainMember, TrainRequest

RELEASE = ReleaseRequest(service="shop", env="prod", ref="v2", requested_by="carol", reason="fix")
ALERT = AlertActionRequest(service="shop", env="prod", alertname="HighErrorRate",
                           fingerprint="c8a5", starts_at=datetime(2026, 11, 25, tzinfo=timezone.utc),
                           requested_by="alertmanager")


def attributes(req: object) -> dict[str, str]:
    return {pair.key.name: pair.value for pair in ops.start_attributes(req)}


@pytest.mark.parametrize("req, workflow_id, summary, attrs", [
    (RELEASE, "shop@prod", "release shop v2 to prod by carol: fix",
     {sa.VERSION.name: "v2", sa.ENV.name: "prod", sa.OPERATION.name: "release"}),
    (RollbackRequest(service="shop", env="prod", requested_by="carol"), "shop@prod",
     "rollback shop previous to prod by carol", {sa.VERSION.name: "previous"}),
    (CreateServiceRequest(spec=ServiceSpec(name="shop", team="t", template="python"),
                          requested_by="carol"), "shop@all", "create shop by carol",
     {sa.ENV.name: "all", sa.OPERATION.name: "create", sa.VERSION.name: None}),
    (DecommissionRequest(service="shop", requested_by="carol", reason="gone"), "shop@all",
     "decommission shop by carol: gone", {sa.ENV.name: "all", sa.VERSION.name: None}),
    (TrainRequest(name="big", env="prod", requested_by="carol",
                  members=[TrainMember(service="shop", ref="v2")]), "train-big@prod",
     "train train-big to prod by carol", {sa.SERVICE.name: "train-big", sa.VERSION.name: None}),
    (ALERT, "alert-shop@prod-c8a5-1795564800", "alert HighErrorRate firing for shop in prod",
     {sa.VERSION.name: "HighErrorRate", sa.OPERATION.name: "alert",
      sa.REQUESTED_BY.name: "alertmanager"}),
])
def test_id_summary_and_start_attributes(req: object, workflow_id: str, summary: str,
                                         attrs: dict[str, str | None]) -> None:
    assert ops.workflow_id(req) == workflow_id
    assert ops.summary(req) == summary
    got = attributes(req)
    assert got[sa.STAGE.name] == "starting" and got[sa.OUTCOME.name] == "running"
    assert {k: got.get(k) for k in attrs} == attrs  # None: not written (never empty)


def test_a_scheduled_release_starts_like_every_operation() -> None:
    """ScheduledRelease runs in the lifecycle: it keeps its stage and outcome like any other."""
    fire = ScheduledReleaseRequest(release=RELEASE, cron="0 2 * * *")
    assert ops.workflow_id(fire) == "scheduled-shop@prod"
    assert ops.summary(fire) == "scheduled release shop v2 to prod (0 2 * * *)"
    assert attributes(fire) == {sa.SERVICE.name: "shop", sa.ENV.name: "prod",
                                sa.OPERATION.name: "scheduled-release", sa.VERSION.name: "v2",
                                sa.REQUESTED_BY.name: "carol", sa.STAGE.name: "starting",
                                sa.OUTCOME.name: "running"}
    action = ops.schedule_action(fire, "q")
    assert action.workflow == "ScheduledRelease" and action.id == "scheduled-shop@prod"


def test_every_registered_operation_has_a_workflow_id_rule() -> None:
    own = {o.request for o in OPERATIONS if o.lock == "own"}
    assert own == {AlertActionRequest, ScheduledReleaseRequest, AutoPromotionRequest}  # workflow_id() names each


async def test_an_update_with_the_wrong_argument_type_is_refused_before_it_is_sent() -> None:
    """The registry types each message: an abort takes a CanaryControl, never a dict."""
    from kepler.contracts import ABORT

    class NeverCalled:
        async def execute_update(self, *args: object, **kwargs: object) -> str:
            raise AssertionError("sent")

    with pytest.raises(TypeError, match="abort takes a CanaryControl, not dict"):
        await ops.update(NeverCalled(), ABORT, {"by": "bob"}, "no canary")  # type: ignore[arg-type]


def test_every_request_type_says_its_subject_summary_and_id() -> None:
    """Every contract's request answers the client without a branch per type."""
    from kepler.contracts import OPERATIONS
    from kepler.requests import OperationRequest

    assert all(issubclass(o.request, OperationRequest) for o in OPERATIONS)
