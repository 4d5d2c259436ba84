"""Freeze: an ad-hoc freeze of one environment (`kepler freeze --env prod --for 2h --reason
...`), whose life is the freeze: from its signed request being verified until its time is
up or `kepler unfreeze` (a signed `unfreeze` update for this run) ends it. Its id is
`freeze@<env>`, so an environment has at most one, visible in the Temporal UI (operation
freeze, stage "frozen until ..."). The gated workflows ask it, through its `freeze` query,
whether it is in force (workflows/steps/freeze.py).

Who may: any listed person may freeze (an emergency stop must be easy, and a freeze only
ever stops changes; rollbacks still go); the one who froze or one of the environment's
approvers may unfreeze (lifting it lets changes go again, so not whoever wants to ship).
A cancel from the Temporal UI ends it too, unsigned, and is notified as such."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import FREEZE
    from kepler.contracts import FREEZE_IN_FORCE, UNFREEZE
    from kepler.freeze import (
        EVERY_SERVICE, ActiveFreeze, FreezeReport, FreezeRequest, UnfreezeRequest,
        freeze_workflow_id,
    )
    from kepler.identity import InvalidStatement, verify
    from kepler.models import Operation, Outcome
    from kepler.payloads import EnvironmentPolicy
    from workflows.base import Done, KeplerWorkflow, StepFailed
    from workflows.common.trust import Untrusted, check_fresh
    from workflows.steps.platform import read_policy

UNFREEZE_VALID_FOR = timedelta(minutes=10)  # a signed unfreeze is for now, not for later


@workflow.defn(name=FREEZE.workflow)
class Freeze(KeplerWorkflow[FreezeReport]):
    def __init__(self) -> None:
        super().__init__()
        self.active: ActiveFreeze | None = None  # set once the request is verified
        self.policy: EnvironmentPolicy | None = None
        self.unfrozen_by = ""
        self.over = False

    @workflow.run
    async def run(self, req: FreezeRequest) -> FreezeReport:
        self.report = FreezeReport(env=req.env, outcome="running", reason=req.reason)
        return await self.operate(Operation.FREEZE, EVERY_SERVICE, req.env, req.requested_by,
                                  f"for {req.duration}", lambda: self.runbook(req), req)

    def needs_approval(self, policy: EnvironmentPolicy) -> bool:
        return True  # no gate, but a freeze is always signed: whose it is is shown and kept

    async def runbook(self, req: FreezeRequest) -> Done:
        assert self.state is not None
        self.policy = await read_policy(self, EVERY_SERVICE, req.env)  # verifies the request
        if self.requester is None or self.requester.kind != "person":
            raise StepFailed("verify request", f"{self.requester}: a freeze is a person's "
                             "(a system identity may not freeze)", "Unauthorized", bad_input=True)
        now = workflow.now()
        until = now + req.duration
        self.active = ActiveFreeze(env=req.env, kind="ad-hoc", name=freeze_workflow_id(req.env),
                                   reason=req.reason, since=now, until=until,
                                   by=str(self.requester), run_id=workflow.info().run_id)
        self.report.since, self.report.until = now, until
        self.set_version(f"until {until:%Y-%m-%d %H:%M} UTC")
        self.set_stage(f"frozen until {until:%Y-%m-%d %H:%M:%S} UTC")
        await self.notify("frozen", f"{self.active.describe()}. Releases, canaries, trains and "
                          "scheduled releases are refused or wait; rollbacks are allowed")
        try:
            await workflow.wait_condition(lambda: bool(self.unfrozen_by), timeout=req.duration)
        except asyncio.TimeoutError:
            pass
        self.report.ended_at, self.report.ended_by = workflow.now(), self.unfrozen_by
        self.over = True
        if self.unfrozen_by:
            return Done("unfrozen", f"{req.env} unfrozen by {self.unfrozen_by} "
                        f"(frozen by {self.active.by}: {req.reason})")
        return Done("unfrozen", f"{req.env}'s freeze by {self.active.by} ended at its time "
                    f"({req.reason})")

    def on_end(self, outcome: Outcome) -> None:
        self.over = True

    @workflow.query(name=FREEZE_IN_FORCE.name)
    def freeze(self) -> list[ActiveFreeze]:
        """The freeze in force: [] before the request is verified and once it is over."""
        return [] if self.active is None or self.over or self.unfrozen_by else [self.active]

    @workflow.update(name=UNFREEZE.name)
    async def unfreeze(self, req: UnfreezeRequest) -> str:
        self.unfrozen_by = self._check_unfreeze(req)
        assert self.active is not None
        return f"{self.active.env} unfrozen by {self.unfrozen_by}"

    @unfreeze.validator
    def _validate_unfreeze(self, req: UnfreezeRequest) -> None:
        self._check_unfreeze(req)

    def _check_unfreeze(self, req: UnfreezeRequest) -> str:
        """Who unfreezes, verified: a signed unfreeze of this run, fresh, by the one who
        froze or one of the environment's approvers; ValueError naming the rule."""
        active, policy = self.active, self.policy
        if active is None or policy is None or self.over or self.unfrozen_by:
            raise ValueError("no freeze is in force")
        if req.signed is None:
            raise ValueError("unfreeze: unsigned; `kepler unfreeze --env ENV` signs it (the "
                             "Temporal UI's update form cannot)")
        try:
            who = verify(req.signed, self.signers, workflow.now())  # keys valid now, by the workflow clock
        except InvalidStatement as e:
            raise ValueError(f"unfreeze: {e}") from None
        s = req.signed.statement
        expected = {"action": "request", "operation": "unfreeze", "env": active.env,
                    "workflow_id": freeze_workflow_id(active.env), "run_id": active.run_id}
        for field, value in expected.items():
            if getattr(s, field) != value:
                raise ValueError(f"unfreeze: signed for {field} {getattr(s, field)!r}, not {value!r}")
        try:
            check_fresh(s, workflow.now(), UNFREEZE_VALID_FOR)
        except Untrusted as e:
            raise ValueError(f"unfreeze: {e}") from None
        if who.kind != "person" or who.name != req.requested_by:
            raise ValueError(f"unfreeze: signed by {who}, not by {req.requested_by}")
        froze = self.requester.name if self.requester else ""
        if who.name != froze and who.name not in policy.approval.approvers:
            raise ValueError(f"{who.name} may not unfreeze {active.env}: the one who froze it "
                             f"({froze}) or one of {active.env}'s approvers "
                             f"({', '.join(policy.approval.approvers) or 'none listed'}) may")
        return str(who)
