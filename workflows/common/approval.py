"""The approval gate: who asked, `approve` and `reject` updates, reminders, expiry, four eyes.

A mixin of KeplerWorkflow (workflows/base.py): it uses the base's `state`, `notify`,
`set_stage` and metrics. The request's signature is verified when the workflow reads its
policy (`identify`); at a gate, every decision must be signed for this run and exactly
what the gate shows, by a listed approver who is not the verified requester
(workflows/common/trust.py). Every decision is recorded as data (who, when, comment,
verified) in `status().approvals`; a gate that ends other than approved raises
ApprovalEnded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Sequence

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.operations import OperationsActivities
    from kepler.identity import CLOCK_SKEW, AllowedSigners, Identity, RequestUse, SignedStatement
    from kepler.models import Approval, ApprovalDecision, PendingApproval
    from kepler.settings import ApprovalPolicy
    from kepler.steps import Authorization
    import workflows.common.metrics as metrics
    from workflows.common.errors import OperationEnded, StepFailed
    from workflows.common.options import QUICK, RETRY
    from workflows.common.trust import Untrusted, for_schedule, verify_decision, verify_request

if TYPE_CHECKING:
    from kepler.models import OperationStatus


# Gates opened from this patch on take signed decisions only (histories from before
# recorded unsigned ones, which their handlers still accept on replay).
SIGNED_APPROVALS = "kepler-signed-approvals"
# Train members from this patch on refuse the train's approvals once older than valid_for.
APPROVAL_EXPIRY = "kepler-approval-expiry"
UNSIGNED = ("the request is not signed: an operation that needs approval takes signed requests "
            "only (the kepler CLI and chat-ops sign them)")


class ApprovalEnded(OperationEnded):
    """The gate ended without approval: `outcome` is rejected or expired."""


class ApprovalGate:
    state: OperationStatus | None

    def __init__(self) -> None:
        self._verdict: str | None = None  # "approve" or "reject" once the open gate is decided
        self._approval_pending = False
        self.request: Any = None  # what the workflow was started with (its signature)
        self.signers = AllowedSigners()
        self.requester: Identity | None = None  # verified; None: the request is not signed
        self._identified = False
        self._sealed = False  # requests expire and are single-use (SEALED_AUTHORITY)
        self._claimed = False
        self._signed_gate = False
        self._gates = 0
        self.gate_approvals: list[SignedStatement] = []  # the last gate's, signed (a train's)

    def authorization(self, gate: str = "approval", approvals: list[SignedStatement] | None = None,
                      train: str = "", request: SignedStatement | None = None) -> Authorization:
        """What the activity applying a change checks again (activities/authorization.py)."""
        return Authorization(gate=gate, request=request or getattr(self.request, "signed", None),
                             approvals=list(self.gate_approvals if approvals is None else approvals),
                             first_run_id=workflow.info().first_execution_run_id, train=train)

    def identify(self, signers: AllowedSigners, gated: bool, sealed: bool = False) -> None:
        """Verify the request's signature against the signers the platform lists now
        (once, at the first policy read); a bad signature, or none where the operation will
        need approval (`gated`), fails before any change. `sealed` (SEALED_AUTHORITY, the
        caller's patch): the signer's key valid now and the request fresh (trust.py)."""
        if self._identified:
            return
        self._identified = True
        self._sealed = sealed
        assert self.state is not None
        self.signers = signers
        info = workflow.info()
        try:
            who = verify_request(self.request, signers, self.state, info.workflow_id,
                                 now=workflow.now() if sealed else None,
                                 continued=info.continued_run_id is not None,
                                 parent_id=info.parent.workflow_id if info.parent else "")
        except Untrusted as e:
            raise StepFailed("verify request", str(e), "Unauthorized", bad_input=True) from None
        if who is not None:
            self.requester = who
            self.state.requested_by, self.state.requester_verified = str(who), True
        elif gated and workflow.patched(SIGNED_APPROVALS):
            raise StepFailed("verify request", UNSIGNED, "Unauthorized", bad_input=True)

    async def claim_request(self) -> None:
        """A signed request starts one run: refuse it, before any change, when another run
        of this workflow id was started with the very same signed request (found by the
        activity in Temporal's own records). A release schedule's is for every fire."""
        signed: SignedStatement | None = getattr(self.request, "signed", None)
        if self._claimed or not self._sealed or signed is None:
            return
        self._claimed = True
        info = workflow.info()
        if for_schedule(signed.statement, info.parent.workflow_id if info.parent else ""):
            return
        used: str = await workflow.execute_activity_method(
            OperationsActivities.request_used,
            RequestUse(signature=signed.signature, since=signed.statement.issued_at - CLOCK_SKEW),
            summary="check the signed request started no other run",
            start_to_close_timeout=QUICK.start_to_close,
            schedule_to_close_timeout=QUICK.schedule_to_close, retry_policy=RetryPolicy(**RETRY))
        if used:
            raise StepFailed("verify request", f"signed request: already used by run {used} of "
                             f"{info.workflow_id}; a signed request starts one run (sign a new "
                             "one)", "Unauthorized", bad_input=True)

    async def notify(self, event: str, text: str) -> None:  # the base's
        raise NotImplementedError

    def set_stage(self, stage: str, defer: bool = False) -> None:  # the base's
        raise NotImplementedError

    async def approval_gate(self, policy: ApprovalPolicy, what: str, digests: Sequence[str] = (),
                            commits: Sequence[str] = (), operation: str = "") -> list[Approval]:
        """Wait for `policy.min_approvals` approvals (or one rejection) of exactly these
        digests and commits, with reminders; the approvals given. Each call is a fresh gate
        (a canary's promotion asks again). `operation`: what the approvals must name, when
        not the operation itself (a break-glass gate's)."""
        assert self.state is not None
        self._signed_gate = workflow.patched(SIGNED_APPROVALS)
        if self._signed_gate and self.requester is None:
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
            valid_for=policy.valid_for if self._signed_gate else None)
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

    def _check_decision(self, decision: ApprovalDecision, verdict: str) -> tuple[PendingApproval, str, bool]:
        """The pending gate, who decides (verified, or as typed in runs from before), and
        whether that was verified; ValueError naming the rule otherwise."""
        pending = self.state.pending_approval if self.state else None
        if pending is None or self._verdict is not None:
            raise ValueError("nothing is pending approval")
        if self._signed_gate:
            who = verify_decision(decision, verdict, pending, self.signers, self.requester,
                                  workflow.now())
            if any(a.signed and a.approver == who.name for a in pending.approvals):
                raise ValueError(f"{who.name} has already approved")
            return pending, str(who), True
        if decision.approver == pending.requested_by:
            raise ValueError(f"{decision.approver} requested this operation and may not approve "
                             "it (four eyes)")
        if decision.approver not in pending.approvers:
            raise ValueError(f"{decision.approver} is not an approver for {pending.env} "
                             f"(approvers: {', '.join(pending.approvers)})")
        if any(a.approver == decision.approver for a in pending.approvals):
            raise ValueError(f"{decision.approver} has already approved")
        return pending, decision.approver, False

    def _record(self, decision: ApprovalDecision, verdict: str, who: str, verified: bool) -> None:
        assert self.state is not None
        self.state.approvals.append(Approval(approver=who, at=workflow.now(), verdict=verdict,
                                             comment=decision.comment, verified=verified))

    @workflow.update
    async def approve(self, decision: ApprovalDecision) -> str:
        pending, who, verified = self._check_decision(decision, "approve")
        decision = decision.model_copy(update={"approver": who.split(" via ")[0]})
        pending.approvals.append(decision)
        if verified and decision.signed is not None:
            self.gate_approvals.append(decision.signed)
        self._record(decision, "approve", who, verified)
        if len(pending.approvals) >= pending.min_approvals:
            self._verdict = "approve"
            return "approved"
        return f"approval recorded ({len(pending.approvals)} of {pending.min_approvals})"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision, "approve")

    @workflow.update
    async def reject(self, decision: ApprovalDecision) -> str:
        _, who, verified = self._check_decision(decision, "reject")
        self._record(decision, "reject", who, verified)
        self._verdict = "reject"
        return "rejected"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision, "reject")
