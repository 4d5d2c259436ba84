"""`kepler audit`: who asked for and who approved which digest and commit, when, through
which channel — read from Temporal history (the signed statements themselves), each
signature verified again against the allowed signers the platform lists now.

A statement is verified for a row only if it is about that row: a request signed for its
workflow id, operation and exact start input; a decision signed for its workflow id and
run, naming the digest and commit the run reports. A valid signature taken from another
run, or for other digests, shows as not verified. Keys are checked at the run's start
(Temporal's event time), when the workflow itself checked them: a key that expired since
does not void what it signed while valid; a key removed from the file does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from kepler.identity import AllowedSigners, InvalidStatement, SignedStatement, request_digest, verify
from kepler.schedules import fire_workflow_id, schedule_id
from kepler.workloads import Model


class Signed(Model):
    """One statement as it stands today: who it says, and whether that still verifies."""
    action: str
    who: str  # the verified identity, or what the statement claimed when it does not verify
    at: datetime | None = None
    channel: str = "cli"  # "slack:U123" for a delegate's, "system" for a system identity,
    # "console" for a passkey's
    verified: bool = False
    problem: str = ""
    comment: str = ""


class AuditRow(Model):
    workflow_id: str
    run_id: str
    operation: str
    env: str
    started: datetime
    outcome: str = ""
    request: Signed | None = None  # None: the request was not signed
    requested_by: str = ""  # as typed in the request
    decisions: list[Signed] = Field(default_factory=list)
    digests: list[str] = Field(default_factory=list)  # what the decisions named, or the report's image
    commits: list[str] = Field(default_factory=list)
    break_glass: str = ""  # the signed request's reason, when it asked to go through a freeze


def check(signed: SignedStatement, signers: AllowedSigners, at: datetime | None = None,
          mismatch: str = "", named: str = "") -> Signed:
    """`signed` as it stands: verified only if its signature holds at `at`, `mismatch`
    (why it is not about this row) is empty and the signer is who the payload `named`."""
    s = signed.statement
    try:
        who = verify(signed, signers, at)
    except InvalidStatement as e:
        claimed = s.on_behalf_of.partition(" via ")[0] if s.on_behalf_of else "?"
        return Signed(action=s.action, who=claimed, at=s.issued_at, problem=str(e),
                      comment=s.comment)
    channel = who.via or ("system" if who.kind == "system" else
                          "console" if signed.passkey is not None else "cli")
    if not mismatch and named and who.name != named:
        mismatch = f"signed by {who}, but it names {named}"
    return Signed(action=s.action, who=who.name, at=s.issued_at, channel=channel,
                  verified=not mismatch, problem=mismatch, comment=s.comment)


def check_request(request: Any, workflow_id: str, operation: str, signers: AllowedSigners,
                  at: datetime | None = None, parent_id: str = "") -> Signed | None:
    """The signed request a run was started with, verified for that run (None: unsigned)."""
    signed: SignedStatement | None = getattr(request, "signed", None)
    if signed is None:
        return None
    s = signed.statement
    scheduled = (s.workflow_id == schedule_id(s.service, s.env)
                 and parent_id.startswith(fire_workflow_id(s.service, s.env)))
    mismatch = ""
    if s.action != "request":
        mismatch = f"signed as {s.action}, not as a request"
    elif s.workflow_id != workflow_id and not scheduled:
        mismatch = f"signed for {s.workflow_id}, not {workflow_id}"
    elif s.operation != operation:
        mismatch = f"signed for a {s.operation}, not a {operation}"
    elif s.request_sha256 != request_digest(request):
        mismatch = "signed for another request than this run was started with"
    return check(signed, signers, at, mismatch, getattr(request, "requested_by", ""))


def decision_mismatch(s: Any, workflow_id: str, run_id: str, image: str, commit: str) -> str:
    """Why a signed decision is not about this run and what it reports, or ''."""
    if s.action not in ("approve", "reject"):
        return f"signed as {s.action}, not as a decision"
    if (s.workflow_id, s.run_id) != (workflow_id, run_id):
        return f"signed for run {s.run_id or '-'} of {s.workflow_id or '-'}, not this run"
    if image and s.digests and image not in s.digests:
        return f"names {', '.join(s.digests)}, not this run's {image}"
    if commit and s.commits and commit not in s.commits:
        return f"names commits {', '.join(s.commits)}, not this run's {commit}"
    return ""


def row(workflow_id: str, run_id: str, operation: str, env: str, started: datetime,
        request: Any, decisions: list[Any], report: Any, signers: AllowedSigners,
        parent_id: str = "") -> AuditRow:
    """One operation's audit from what its history holds: the start input (the request),
    the accepted approve/reject updates, and the result. `operation` is the workflow
    type's (not a search attribute any starter writes)."""
    out = AuditRow(workflow_id=workflow_id, run_id=run_id, operation=operation, env=env,
                   started=started, requested_by=getattr(request, "requested_by", ""),
                   outcome=getattr(report, "outcome", "") if report is not None else "")
    if getattr(request, "break_glass", False):
        out.break_glass = getattr(request, "reason", "") or "(no reason)"
    out.request = check_request(request, workflow_id, operation, signers, started, parent_id)
    image, commit = getattr(report, "image", ""), getattr(report, "commit", "")
    for decision in decisions:
        if decision.signed is None:
            out.decisions.append(Signed(action="?", who=decision.approver, problem="unsigned"))
            continue
        s = decision.signed.statement
        checked = check(decision.signed, signers, started,
                        decision_mismatch(s, workflow_id, run_id, image, commit))
        out.decisions.append(checked)
        if not checked.verified:  # what it names is not shown as this run's
            continue
        for digest in s.digests:
            out.digests += [digest] if digest not in out.digests else []
        for c in s.commits:
            out.commits += [c] if c not in out.commits else []
    if image and image not in out.digests:
        out.digests.append(image)
    if commit and commit not in out.commits:
        out.commits.append(commit)
    return out
