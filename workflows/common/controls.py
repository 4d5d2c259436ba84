"""Controls of a running operation (a canary's pause, resume, promote and abort; a
decommission's restore), verified: each must be a signed statement of that verb for
exactly this workflow run, signed within CONTROL_VALID_FOR, used once, by a person.
Who may give which control is the operation's own rule (workflows/common/canary_controls.py,
workflows/decommission.py). A typed name proves nothing: it is refused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.identity import (
        CLOCK_SKEW, AllowedSigners, Identity, InvalidStatement, SignedStatement, describe, verify,
    )
    from workflows.common.trust import Untrusted

CONTROL_VALID_FOR = timedelta(minutes=15)  # a control is for now, not for later


def fingerprint(signed: SignedStatement) -> str:
    """What marks a control as used: its signature (an SSH key's, or a passkey's)."""
    return hashlib.sha256(signed.proof().encode()).hexdigest()


def verify_control(signed: SignedStatement | None, verb: str, operation: str, service: str,
                   env: str, signers: AllowedSigners, used: set[str], now: datetime) -> Identity:
    """The person who signed `verb` for this run; Untrusted naming the rule otherwise."""
    if signed is None:
        raise Untrusted(f"{verb}: unsigned (a typed name proves nothing); use `kepler {verb}` "
                        "or chat-ops, which sign it for this run")
    if not signers.signers:
        raise Untrusted(f"{verb}: the allowed signers are not loaded yet (the operation has not "
                        "read its policy); try again in a moment")
    try:
        who = verify(signed, signers)
    except InvalidStatement as e:
        raise Untrusted(f"{verb}: {e}") from None
    s, info = signed.statement, workflow.info()
    expected = {"action": verb, "operation": operation, "service": service, "env": env,
                "workflow_id": info.workflow_id, "run_id": info.run_id}
    for field, value in expected.items():
        if getattr(s, field) != value:
            raise Untrusted(f"{verb}: signed for {describe(s)}, not for run {info.run_id} of "
                            f"{info.workflow_id} ({field} differs)")
    _fresh_and_unused(signed, used, now,
                      f"{verb}: signed at {s.issued_at:%Y-%m-%d %H:%M:%S} UTC; a control is "
                      f"valid for {CONTROL_VALID_FOR} after signing (sign it again)",
                      f"{verb}: this signed {verb} was already used in this run (sign a new one)")
    if who.kind != "person":
        raise Untrusted(f"{verb}: {who} is a system identity and gives no controls")
    return who


def verify_alert_abort(signed: SignedStatement, service: str, env: str,
                       signers: AllowedSigners, used: set[str], now: datetime) -> Identity:
    """The alert receiver's abort of a canary (activities/alerts.py): its signed request of
    the alert action for this service and environment, signed by a system identity within
    CONTROL_VALID_FOR, once. (A system identity signs requests only; an abort puts back.)"""
    try:
        who = verify(signed, signers)
    except InvalidStatement as e:
        raise Untrusted(f"abort: {e}") from None
    s = signed.statement
    if who.kind != "system" or (s.action, s.operation, s.service, s.env) != (
            "request", "alert", service, env):
        raise Untrusted(f"abort: {describe(s)} by {who} is not an alert's action on "
                        f"{service} in {env}")
    _fresh_and_unused(signed, used, now,
                      f"abort: the alert was signed at {s.issued_at:%Y-%m-%d %H:%M:%S} UTC, "
                      f"over {CONTROL_VALID_FOR} ago",
                      "abort: this alert's action was already used in this run")
    return who


def _fresh_and_unused(signed: SignedStatement, used: set[str], now: datetime, too_old: str,
                      used_already: str) -> None:
    age = now - signed.statement.issued_at
    if age > CONTROL_VALID_FOR or age < -CLOCK_SKEW:
        raise Untrusted(too_old)
    if fingerprint(signed) in used:
        raise Untrusted(used_already)
