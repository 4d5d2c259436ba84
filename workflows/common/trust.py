"""Who asked and who approved, verified: pure checks of signed statements (kepler/identity.py)
that workflows run themselves, at the start, in update validators and in the handlers.

A request's signature must cover this operation, service, environment and workflow id
and the request's exact content, and its signer must be who the request names. An
approval's must cover this run and exactly what the gate shows (operation, digests,
commits), by a person listed for the environment who is not the verified requester.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.identity import (
        CLOCK_SKEW, AllowedSigners, Identity, InvalidStatement, SignedStatement, describe,
        request_digest, verify,
    )
    from kepler.models import ApprovalDecision, OperationStatus, PendingApproval
    from kepler.schedules import fire_workflow_id, schedule_id
    from kepler.settings import ApprovalPolicy

class Untrusted(ValueError):
    """A statement that does not hold; the message names the rule."""


def check_fresh(s: Any, now: datetime, valid_for: timedelta | None) -> None:
    """An approval lets its change through for `valid_for` after it was signed."""
    if valid_for is None:
        return
    age = now - s.issued_at
    if age > valid_for or age < -CLOCK_SKEW:
        raise Untrusted(f"this {s.action} was signed at {s.issued_at:%Y-%m-%d %H:%M:%S} UTC; "
                        f"approvals are valid for {valid_for} after signing (sign it again)")


def verify_request(request: Any, signers: AllowedSigners, state: OperationStatus,
                   workflow_id: str, now: datetime, continued: bool = False,
                   parent_id: str = "", operation: str = "") -> Identity | None:
    """The verified requester of `request`, or None when it is not signed. The signer's
    key must be valid `now` and the request fresh: signed at most
    signers.request_valid_for ago (a continued run's first run checked that), or a release
    schedule's, for the fire that is this run's parent. `operation`: the one signed for,
    when not this run's (a blue-green run: the release that handed over to it)."""
    signed: SignedStatement | None = getattr(request, "signed", None)
    if signed is None:
        return None
    who = _verify(signed, signers, now)
    s = signed.statement
    scheduled = for_schedule(s, parent_id)
    expected = {"action": "request", "operation": operation or state.operation.value,
                "service": state.service,
                "env": state.env, "workflow_id": s.workflow_id if scheduled else workflow_id}
    for field, value in expected.items():
        if getattr(s, field) != value:
            raise Untrusted(f"signed request: it was signed for {field} {getattr(s, field)!r}, "
                            f"not {value!r}")
    if s.request_sha256 != request_digest(request):
        raise Untrusted("signed request: the request was changed after it was signed")
    if who.name != request.requested_by:
        raise Untrusted(f"signed request: signed by {who}, but requested_by says "
                        f"{request.requested_by}")
    if not continued and not scheduled:
        check_request_fresh(s, now, signers.request_valid_for, parent_id)
    return who


def for_schedule(s: Any, parent_id: str) -> bool:
    """A release schedule's request: signed for the schedule, for every fire (each fire's
    ScheduledRelease starts this run as its child), so neither fresh nor single-use."""
    return (s.workflow_id == schedule_id(s.service, s.env)
            and parent_id.startswith(fire_workflow_id(s.service, s.env)))


def check_request_fresh(s: Any, now: datetime, valid_for: timedelta | None, parent_id: str) -> None:
    if valid_for is None:
        return
    age = now - s.issued_at
    if age > valid_for or age < -CLOCK_SKEW:
        hint = (" (a release schedule created before requests expired: delete it and create it "
                "again)" if parent_id.startswith(fire_workflow_id(s.service, s.env)) else "")
        raise Untrusted(f"signed request: signed at {s.issued_at:%Y-%m-%d %H:%M:%S} UTC; a "
                        f"request may start a run for {valid_for} after signing "
                        f"(identity.request_valid_for): sign a new one{hint}")


def verify_decision(decision: ApprovalDecision, verdict: str, pending: PendingApproval,
                    signers: AllowedSigners, requester: Identity | None,
                    now: datetime) -> Identity:
    """The verified approver (or rejecter) of `decision` at the gate `pending`."""
    if requester is None:
        raise Untrusted("the request is not signed: an environment that requires approval "
                        "takes signed requests only (kepler CLI or chat)")
    if decision.signed is None:
        raise Untrusted(f"{decision.approver or 'this decision'}: unsigned; approve with "
                        f"`kepler {verdict} {pending.service} --env {pending.env}` or the chat "
                        "buttons, which sign it (the Temporal UI's update form cannot)")
    who = _verify(decision.signed, signers, now)
    s = decision.signed.statement
    expected = {"action": verdict, "operation": pending.operation, "service": pending.service,
                "env": pending.env, "workflow_id": pending.workflow_id, "run_id": pending.run_id,
                "gate": pending.gate}
    for field, value in expected.items():
        if getattr(s, field) != value:
            raise Untrusted(f"this {s.action} was signed for {describe(s)}, not for run "
                            f"{pending.run_id} of {pending.workflow_id} ({field} differs)")
    if sorted(s.digests) != sorted(pending.digests) or sorted(s.commits) != sorted(pending.commits):
        raise Untrusted(f"this {s.action} names digests {', '.join(s.digests) or '-'} and "
                        f"commits {', '.join(s.commits) or '-'}; the gate is for "
                        f"{', '.join(pending.digests) or '-'} / {', '.join(pending.commits) or '-'}")
    check_fresh(s, now, pending.valid_for)
    if who.kind != "person":
        raise Untrusted(f"{who} is a system identity and never approves")
    if decision.approver and decision.approver != who.name:
        raise Untrusted(f"signed by {who}, but the decision names {decision.approver}")
    if who.name == requester.name:
        raise Untrusted(f"{who.name} requested this operation and may not approve it (four eyes)")
    if who.name not in pending.approvers:
        raise Untrusted(f"{who.name} is not an approver for {pending.env} "
                        f"(approvers: {', '.join(pending.approvers)})")
    return who


def verify_train_approvals(statements: list[SignedStatement], parent_id: str, parent_run: str,
                           env: str, commit: str, image: str, policy: ApprovalPolicy,
                           requested_by: str, signers: AllowedSigners,
                           now: datetime) -> None:
    """A train member's release: enough of the train gate's signed, unexpired approvals,
    for that train run, name this member's commit and digest."""
    approved: set[str] = set()
    problems = []
    for signed in statements:
        try:
            who = _verify(signed, signers)
            check_fresh(signed.statement, now, policy.valid_for)
        except Untrusted as e:
            problems.append(str(e))
            continue
        s = signed.statement
        if (s.action, s.operation, s.workflow_id, s.run_id, s.env) != (
                "approve", "train", parent_id, parent_run, env) or commit not in s.commits or (
                image not in s.digests):
            problems.append(f"{who}'s approval is for {describe(s)}")
        elif who.kind == "person" and who.name in policy.approvers and who.name != requested_by:
            approved.add(who.name)
    if len(approved) < policy.min_approvals:
        raise Untrusted(f"the train's approvals do not cover {image or 'commit'} "
                        f"({commit[:12]}) of run {parent_run} of {parent_id} ({len(approved)} of "
                        f"{policy.min_approvals} valid" + (f"; {'; '.join(problems)}" if problems else "") + ")")


def _verify(signed: SignedStatement, signers: AllowedSigners, now: datetime | None = None) -> Identity:
    """Verified at `now`, else at workflow.now() (never the wall clock: this is workflow code)."""
    if not signers.signers:
        raise Untrusted("no allowed signers are configured (identity.allowed_signers in "
                        "kepler.yaml): no signature can be verified")
    try:
        return verify(signed, signers, now or workflow.now())
    except InvalidStatement as e:
        raise Untrusted(str(e)) from None
