"""The approval gate: `approve` and `reject` updates, reminders, expiry, four eyes.

A mixin of KeplerWorkflow (workflows/base.py): it uses the base's `state`, `notify`,
`set_stage` and metrics. Every decision is recorded as data (who, when, comment) in
`status().approvals`; a gate that ends other than approved raises ApprovalEnded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.models import Approval, ApprovalDecision, PendingApproval
    from kepler.settings import ApprovalPolicy
    import workflows.common.metrics as metrics
    from workflows.common.errors import OperationEnded

if TYPE_CHECKING:
    from kepler.models import OperationStatus


class ApprovalEnded(OperationEnded):
    """The gate ended without approval: `outcome` is rejected or expired."""


class ApprovalGate:
    state: OperationStatus | None

    def __init__(self) -> None:
        self._verdict: str | None = None  # "approve" or "reject" once the open gate is decided
        self._approval_pending = False

    async def notify(self, event: str, text: str) -> None:  # the base's
        raise NotImplementedError

    def set_stage(self, stage: str, defer: bool = False) -> None:  # the base's
        raise NotImplementedError

    async def approval_gate(self, policy: ApprovalPolicy, what: str) -> list[Approval]:
        """Wait for `policy.min_approvals` approvals (or one rejection), with reminders;
        the approvals given. Each call is a fresh gate (a canary's promotion asks again)."""
        assert self.state is not None
        self._verdict = None
        first = len(self.state.approvals)
        deadline = workflow.now() + policy.timeout
        self.state.pending_approval = PendingApproval(
            env=self.state.env, approvers=list(policy.approvers),
            requested_by=self.state.requested_by, min_approvals=policy.min_approvals,
            deadline=deadline)
        self.set_stage("awaiting approval")
        self._approval_metric(True)
        await self.notify("awaiting_approval", f"{what} needs approval by one of "
                          f"{', '.join(policy.approvers)} before {deadline.isoformat()}")
        try:
            while self._verdict is None:
                remaining = deadline - workflow.now()
                if remaining <= timedelta(0):
                    break
                try:
                    await workflow.wait_condition(lambda: self._verdict is not None,
                                                  timeout=min(policy.remind_every, remaining))
                except asyncio.TimeoutError:
                    if workflow.now() < deadline:
                        await self.notify("approval_reminder",
                                          f"{what} is still waiting for approval")
        finally:  # decided, expired, aborted or cancelled: nothing is pending any more
            self.state.pending_approval = None
            self._approval_metric(False)
        if self._verdict is None:
            raise ApprovalEnded("expired", f"approval expired after {policy.timeout}")
        decided = self.state.approvals[first:]
        if self._verdict == "reject":
            last = decided[-1]
            raise ApprovalEnded("rejected", f"rejected by {last.approver}"
                                + (f": {last.comment}" if last.comment else ""))
        approved = [a for a in decided if a.verdict == "approve"]
        self.state.notes.append("approved by " + ", ".join(a.approver for a in approved))
        return approved

    def _approval_metric(self, pending: bool) -> None:
        """The `kepler_approvals_pending` gauge: 1 from the gate's start until decided."""
        if pending or self._approval_pending:
            self._approval_pending = pending
            assert self.state is not None
            metrics.approval_pending(self.state.operation.value, self.state.service,
                                     self.state.env, pending)

    def _check_decision(self, decision: ApprovalDecision) -> PendingApproval:
        pending = self.state.pending_approval if self.state else None
        if pending is None or self._verdict is not None:
            raise ValueError("nothing is pending approval")
        if decision.approver == pending.requested_by:
            raise ValueError(f"{decision.approver} requested this operation and may not approve "
                             "it (four eyes)")
        if decision.approver not in pending.approvers:
            raise ValueError(f"{decision.approver} is not an approver for {pending.env} "
                             f"(approvers: {', '.join(pending.approvers)})")
        if any(a.approver == decision.approver for a in pending.approvals):
            raise ValueError(f"{decision.approver} has already approved")
        return pending

    def _record(self, decision: ApprovalDecision, verdict: str) -> None:
        assert self.state is not None
        self.state.approvals.append(Approval(approver=decision.approver, at=workflow.now(),
                                             verdict=verdict, comment=decision.comment))

    @workflow.update
    async def approve(self, decision: ApprovalDecision) -> str:
        pending = self._check_decision(decision)
        pending.approvals.append(decision)
        self._record(decision, "approve")
        if len(pending.approvals) >= pending.min_approvals:
            self._verdict = "approve"
            return "approved"
        return f"approval recorded ({len(pending.approvals)} of {pending.min_approvals})"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)

    @workflow.update
    async def reject(self, decision: ApprovalDecision) -> str:
        self._check_decision(decision)
        self._record(decision, "reject")
        self._verdict = "reject"
        return "rejected"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)
