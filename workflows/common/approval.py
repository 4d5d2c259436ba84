"""The approval gate: who asked, `approve` and `reject` updates, reminders, expiry, four eyes.

A mixin that only gated operations list before KeplerWorkflow (workflows/base.py): it uses
the lifecycle's `state`, `notify`, `set_stage`, requester and signers. At a gate, every
decision must be signed for this run and exactly what the gate shows, by a listed approver who is not the verified requester
(workflows/common/trust.py). Every decision is recorded as data (who, when, comment,
verified) in `status().approvals`; a gate that ends other than approved raises
ApprovalEnded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Sequence

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import APPROVE, REJECT
    from kepler.identity import AllowedSigners, Identity, SignedStatement
    from kepler.models import (
        Approval, ApprovalDecision, Operation, Outcome, PendingApproval,
    )
    from kepler.settings import ApprovalPolicy
    import workflows.common.metrics as metrics
    from workflows.common.errors import OperationEnded, StepFailed
    from workflows.common.requester import SIGNED_APPROVALS, UNSIGNED, refused_in_handler
    from workflows.common.trust import verify_decision

if TYPE_CHECKING:
    from kepler.models import OperationStatus


# Retired patch (deprecated in 0.2.0): train members refuse the train's approvals once
# older than valid_for.
APPROVAL_EXPIRY = "kepler-approval-expiry"
GATED = (Operation.RELEASE, Operation.CANARY, Operation.TRAIN)  # by the policy's `approval`


class ApprovalEnded(OperationEnded):
    """The gate ended without approval: `outcome` is rejected or expired."""


class ApprovalGate:
    """`class ReleaseVersion(ApprovalGate, KeplerWorkflow)`: the approve and reject updates
    and `approval_gate`, for the operations whose policy can ask for approval."""
    state: OperationStatus | None
    requester: Identity | None
    signers: AllowedSigners
    gate_approvals: list[SignedStatement]

    if TYPE_CHECKING:  # RequestAuthority's (workflows/common/requester.py), in the lifecycle
        def knows_signer_of(self, signed: SignedStatement | None) -> bool: ...
        async def read_signers_for(self, signed: SignedStatement | None) -> None: ...

    def __init__(self) -> None:
        super().__init__()
        self._verdict: str | None = None  # "approve" or "reject" once the open gate is decided
        self._approval_pending = False
        self._gates = 0

    def needs_approval(self, policy: Any) -> bool:
        """Whether this operation will wait at a gate under the environment's `policy`
        (then its request must be signed)."""
        assert self.state is not None
        if self.state.operation == Operation.ROLLBACK:
            return bool(policy.rollback_approval.required)
        return self.state.operation in GATED and bool(policy.approval.required)

    def finish(self, outcome: Outcome, error: str = "") -> None:
        super().finish(outcome, error)  # type: ignore[misc]
        self._approval_metric(False)

    async def approval_gate(self, policy: ApprovalPolicy, what: str, digests: Sequence[str] = (),
                            commits: Sequence[str] = (), operation: str = "") -> list[Approval]:
        """Wait for `policy.min_approvals` approvals (or one rejection) of exactly these
        digests and commits, with reminders; the approvals given. Each call is a fresh gate
        (a canary's promotion asks again). `operation`: what the approvals must name, when
        not the operation itself (a break-glass gate's)."""
        assert self.state is not None
        patches.retired(SIGNED_APPROVALS)
        if self.requester is None:
            raise StepFailed("awaiting approval", UNSIGNED, "Unauthorized", bad_input=True)
        self._verdict = None
        self._gates += 1
        self.gate_approvals = []
        first = len(self.state.approvals)
        deadline = workflow.now() + policy.timeout
        info = workflow.info()
        self.state.pending_approval = PendingApproval(
            env=self.state.env, approvers=list(policy.approvers),
            requested_by=self.state.requested_by, min_approvals=policy.min_approvals,
            deadline=deadline, operation=operation or self.state.operation.value,
            service=self.state.service,
            workflow_id=info.workflow_id, run_id=info.run_id, digests=list(digests),
            commits=list(commits), gate=self._gates,
            valid_for=policy.valid_for)
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

    def _check_decision(self, decision: ApprovalDecision,
                        verdict: str) -> tuple[PendingApproval, str]:
        """The pending gate and who decides, verified; ValueError naming the rule otherwise."""
        pending = self.state.pending_approval if self.state else None
        if pending is None or self._verdict is not None:
            raise ValueError("nothing is pending approval")
        who = verify_decision(decision, verdict, pending, self.signers, self.requester,
                              workflow.now())
        if any(a.signed and a.approver == who.name for a in pending.approvals):
            raise ValueError(f"{who.name} has already approved")
        return pending, str(who)

    def _record(self, decision: ApprovalDecision, verdict: str, who: str) -> None:
        assert self.state is not None
        self.state.approvals.append(Approval(approver=who, at=workflow.now(), verdict=verdict,
                                             comment=decision.comment, verified=True))

    def _check_or_defer(self, decision: ApprovalDecision, verdict: str) -> None:
        """The validator's check; a passkey new to this run is checked by the handler, once
        it has read the signers again (RequestAuthority.read_signers_for)."""
        if self.knows_signer_of(decision.signed):
            self._check_decision(decision, verdict)
        elif self.state is None or self.state.pending_approval is None or self._verdict is not None:
            raise ValueError("nothing is pending approval")

    @workflow.update(name=APPROVE.name)
    async def approve(self, decision: ApprovalDecision) -> str:
        await self.read_signers_for(decision.signed)
        with refused_in_handler():
            pending, who = self._check_decision(decision, "approve")
        decision = decision.model_copy(update={"approver": who.split(" via ")[0]})
        pending.approvals.append(decision)
        if decision.signed is not None:  # always: verify_decision wants it signed
            self.gate_approvals.append(decision.signed)
        self._record(decision, "approve", who)
        if len(pending.approvals) >= pending.min_approvals:
            self._verdict = "approve"
            return "approved"
        return f"approval recorded ({len(pending.approvals)} of {pending.min_approvals})"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_or_defer(decision, "approve")

    @workflow.update(name=REJECT.name)
    async def reject(self, decision: ApprovalDecision) -> str:
        await self.read_signers_for(decision.signed)
        with refused_in_handler():
            _, who = self._check_decision(decision, "reject")
        self._record(decision, "reject", who)
        self._verdict = "reject"
        return "rejected"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_or_defer(decision, "reject")
