"""`kepler audit`: who asked for and who approved which digest and commit, when, through
which channel — read from Temporal history (the signed statements themselves), each
signature verified again against the allowed signers the platform lists now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from kepler.identity import AllowedSigners, InvalidStatement, SignedStatement, verify
from kepler.workloads import Model


class Signed(Model):
    """One statement as it stands today: who it says, and whether that still verifies."""
    action: str
    who: str  # the verified identity, or what the statement claimed when it does not verify
    at: datetime | None = None
    channel: str = "cli"  # "slack:U123" for a delegate's, "system" for a system identity
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


def check(signed: SignedStatement, signers: AllowedSigners) -> Signed:
    s = signed.statement
    try:
        who = verify(signed, signers)
    except InvalidStatement as e:
        claimed = s.on_behalf_of.partition(" via ")[0] if s.on_behalf_of else "?"
        return Signed(action=s.action, who=claimed, at=s.issued_at, problem=str(e),
                      comment=s.comment)
    channel = who.via or ("system" if who.kind == "system" else "cli")
    return Signed(action=s.action, who=who.name, at=s.issued_at, channel=channel, verified=True,
                  comment=s.comment)


def row(workflow_id: str, run_id: str, operation: str, env: str, started: datetime,
        request: Any, decisions: list[Any], report: Any, signers: AllowedSigners) -> AuditRow:
    """One operation's audit from what its history holds: the start input (the request),
    the accepted approve/reject updates, and the result."""
    out = AuditRow(workflow_id=workflow_id, run_id=run_id, operation=operation, env=env,
                   started=started, requested_by=getattr(request, "requested_by", ""),
                   outcome=getattr(report, "outcome", "") if report is not None else "")
    if getattr(request, "break_glass", False):
        out.break_glass = getattr(request, "reason", "") or "(no reason)"
    signed = getattr(request, "signed", None)
    if signed is not None:
        out.request = check(signed, signers)
    for decision in decisions:
        if decision.signed is None:
            out.decisions.append(Signed(action="?", who=decision.approver, problem="unsigned"))
            continue
        out.decisions.append(check(decision.signed, signers))
        for digest in decision.signed.statement.digests:
            out.digests += [digest] if digest not in out.digests else []
        for commit in decision.signed.statement.commits:
            out.commits += [commit] if commit not in out.commits else []
    image, commit = getattr(report, "image", ""), getattr(report, "commit", "")
    if image and image not in out.digests:
        out.digests.append(image)
    if commit and commit not in out.commits:
        out.commits.append(commit)
    return out
