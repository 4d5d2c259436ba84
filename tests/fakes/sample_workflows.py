"""Workflows used only by tests (in their own module: the workflow sandbox re-imports it)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.models import ApprovalDecision


@workflow.defn
class SleepsADay:
    @workflow.run
    async def run(self, req: ApprovalDecision) -> ApprovalDecision:
        await workflow.sleep(timedelta(days=1))
        return ApprovalDecision(approver=req.approver, comment=f"woke {workflow.now().isoformat()}")


@workflow.defn
class Echo:
    """Returns its input with a comment: what a payload carries, for the codec tests."""

    @workflow.run
    async def run(self, req: ApprovalDecision) -> ApprovalDecision:
        return ApprovalDecision(approver=req.approver, comment=f"echo: {req.comment}")
