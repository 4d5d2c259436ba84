"""Crafted rows for `kepler audit` and `kepler metrics` (issue 26, item 9): valid
signatures (made by the real ssh-keygen with the sandbox's keys) put where they do not
belong — another run, other digests, another workflow, a rollback merely naming the
alerts identity. Each shows as not verified, and counts for nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from kepler.audit import row
from kepler.identity import SYSTEM, Statement
from kepler.metrics import ChangeRow, compute
from kepler.models import ApprovalDecision, ReleaseReport, ReleaseRequest, RollbackRequest
from kepler.settings import load_platform
from starter.metrics import signed_by
from starter.signing import sign, sign_request, signing_key
from tests.helpers import signed

IMAGE = "reg/demo/shop@sha256:" + "a" * 64
OTHER = "reg/demo/shop@sha256:" + "b" * 64
COMMIT = "c" * 40
NOW = datetime.now(timezone.utc)


def approval(run_id: str, digest: str = IMAGE) -> ApprovalDecision:
    statement = Statement(action="approve", operation="release", service="shop", env="prod",
                          workflow_id="shop@prod", run_id=run_id, gate=1, digests=[digest],
                          commits=[COMMIT], issued_at=NOW)
    return ApprovalDecision(approver="alice", signed=sign(statement, signing_key(load_platform(), "alice")))


def audited(run_id: str, decisions: list[Any], request: Any = None, workflow_id: str = "shop@prod") -> Any:
    request = request or signed(ReleaseRequest(service="shop", env="prod", ref="v1", requested_by="carol"))
    report = ReleaseReport(service="shop", env="prod", outcome="succeeded", image=IMAGE, commit=COMMIT)
    return row(workflow_id, run_id, "release", "prod", NOW, request, decisions, report,
               load_platform().signers())


def test_an_approval_of_this_run_and_digest_is_verified() -> None:
    """The control: the statement in the row it was signed for."""
    (decision,) = audited("run-1", [approval("run-1")]).decisions
    assert (decision.who, decision.verified, decision.problem) == ("alice", True, "")


def test_an_approval_taken_from_another_run_is_not_verified() -> None:
    audit = audited("run-2", [approval("run-1")])
    (decision,) = audit.decisions
    assert not decision.verified and decision.problem == "signed for run run-1 of shop@prod, not this run"
    assert audit.digests == [IMAGE]  # the report's; nothing the foreign approval names


def test_an_approval_of_other_digests_is_not_verified() -> None:
    audit = audited("run-1", [approval("run-1", digest=OTHER)])
    (decision,) = audit.decisions
    assert not decision.verified and decision.problem == f"names {OTHER}, not this run's {IMAGE}"
    assert OTHER not in audit.digests


def test_a_request_signed_for_another_workflow_or_content_is_not_verified() -> None:
    staging = signed(ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="carol"))
    request = audited("run-1", [], request=staging).request
    assert request is not None and not request.verified
    assert request.problem == "signed for shop@staging, not shop@prod"
    prod = signed(ReleaseRequest(service="shop", env="prod", ref="v1", requested_by="carol"))
    altered = prod.model_copy(update={"ref": "v2"})
    request = audited("run-1", [], request=altered).request
    assert request is not None and not request.verified
    assert request.problem == "signed for another request than this run was started with"
    request = audited("run-1", [], request=prod).request
    assert request is not None and request.verified and request.who == "carol"


def test_metrics_count_a_rollback_as_the_alerts_only_if_they_signed_it() -> None:
    """A deploy then a rollback that names `alerts`: counted as the alert's (a failed
    deploy) only with signed_by, which the reader sets from the verified request."""
    at = datetime(2026, 3, 2, tzinfo=timezone.utc)

    def rows(signed_by: str) -> list[ChangeRow]:
        return [ChangeRow(workflow_id="shop@prod", run_id="r1", operation="release", service="shop",
                          env="prod", outcome="succeeded", started=at, closed=at + timedelta(minutes=5)),
                ChangeRow(workflow_id="shop@prod", run_id="r2", operation="rollback", service="shop",
                          env="prod", outcome="succeeded", started=at + timedelta(hours=1),
                          closed=at + timedelta(hours=1, minutes=5), requested_by="alerts",
                          signed_by=signed_by)]

    def failed(signed_by: str) -> int:
        return compute(rows(signed_by), ["prod"], at - timedelta(days=1), at + timedelta(days=1),
                       "alerts")["prod"].change_failure_rate.failed

    assert failed("alerts") == 1
    assert failed("") == 0


async def test_metrics_read_who_signed_a_rollback_from_its_history(dev_env: Any) -> None:
    """The reader's check against real runs: unsigned but naming `alerts` (a raw start),
    signed by a person as `alerts`, or signed by the alerts identity itself. The runs
    are only started (on a queue no worker polls): their start input is what counts."""
    client = dev_env.client
    p = load_platform()
    signers = p.signers()
    plain = RollbackRequest(service=f"shop-{uuid.uuid4().hex[:6]}", env="prod", requested_by="alerts")
    by_alerts = sign_request(p, plain, signing_key(p, "alerts"), SYSTEM)
    by_carol = sign_request(p, plain, signing_key(p, "carol"))
    queue = f"nobody-{uuid.uuid4()}"
    found = []
    for request in (plain, by_carol, by_alerts):
        handle = await client.start_workflow("Rollback", request, id=f"{plain.service}@prod",
                                             task_queue=queue)
        run = ChangeRow(workflow_id=handle.id, run_id=handle.result_run_id or "", operation="rollback",
                        service=plain.service, env="prod", outcome="succeeded", started=NOW,
                        closed=NOW, requested_by="alerts")
        found.append(await signed_by(client, run, signers))
        await handle.terminate("test")
    assert found == ["", "", "alerts"]
