"""The freeze check of the gated workflows (release and promotion, canary, train), made in
the workflow itself so it holds against anyone who can start workflows on the frontend:
the platform's windows evaluated at workflow.now() from the policy the worker read, the
ad-hoc freeze (`freeze@<env>`) found by an activity. A freeze refuses (exit 3), or waits
on a durable timer with `after_freeze`, or lets a break-glass request through its own
gate: two of the environment's approvers other than the requester. Rollbacks never call it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple, Sequence

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.temporal import TemporalActivities
    from kepler import freeze
    from kepler.freeze import BREAK_GLASS, BREAK_GLASS_APPROVALS, ActiveFreeze, refusal
    from kepler.models import Approval
    from kepler.payloads import EnvironmentPolicy
    from workflows.base import KeplerWorkflow, StepFailed

# Retired patch (deprecated in 0.2.0): releases, promotions, canaries, trains and scheduled
# releases check freezes before their first change.
FREEZE_WINDOWS = "kepler-freeze-windows"
RECHECK = timedelta(minutes=5)  # how often a wait looks again for an ad-hoc freeze's end
RECHECK_AFTER = timedelta(seconds=30)  # a change this long after the check looks again first


async def in_force(wf: KeplerWorkflow, policy: EnvironmentPolicy) -> ActiveFreeze | None:
    """The freeze in force now, or None (not a step of its own in status: every release
    makes it, and a refusal names it)."""
    adhoc: list[ActiveFreeze] = await wf.attempt(
        "check freeze", TemporalActivities.active_freeze, policy.env)
    return freeze.in_force(policy.freeze, adhoc, policy.env, workflow.now())


class Checked(NamedTuple):
    """What the check before any change found: the freeze a break-glass request goes
    through (None: open), and when it looked."""
    frozen: ActiveFreeze | None
    at: datetime


async def check(wf: KeplerWorkflow, policy: EnvironmentPolicy, req: Any,
                adhoc: list[ActiveFreeze] | None = None) -> Checked:
    """Before anything: open (after waiting for it with `after_freeze`), or the freeze a
    break-glass request goes through; otherwise refused (exit 3). `adhoc`: the ad-hoc
    freezes just read with the policy (None: read them now)."""
    return Checked(await _hold(wf, policy, req, "check freeze", adhoc=adhoc), workflow.now())


async def recheck(wf: KeplerWorkflow, policy: EnvironmentPolicy, req: Any, checked: Checked) -> None:
    """Just before the first change, when time has passed since the check (a gate, a
    build): a freeze may have begun. A run with break-glass approvals goes through."""
    if workflow.now() - checked.at > RECHECK_AFTER:
        await _hold(wf, policy, req, "check freeze again", through=checked.frozen)


async def gate(wf: KeplerWorkflow, policy: EnvironmentPolicy, req: Any, checked: Checked,
               what: str, digests: Sequence[str], commits: Sequence[str]) -> list[Approval]:
    """The change's approval: a break-glass gate through the freeze found, else the
    environment's usual gate when its policy asks; then the freeze checked again."""
    approvals: list[Approval] = []
    if checked.frozen is not None:
        approvals = await break_glass_gate(wf, policy, f"through a freeze ({checked.frozen.describe()})",
                                           req.reason, what,
                                           digests, commits)
    elif policy.approval.required:
        approvals = await wf.approval_gate(policy.approval, what, digests=digests, commits=commits)
    await recheck(wf, policy, req, checked)
    return approvals


async def _hold(wf: KeplerWorkflow, policy: EnvironmentPolicy, req: Any, step: str,
                through: ActiveFreeze | None = None,
                adhoc: list[ActiveFreeze] | None = None) -> ActiveFreeze | None:
    """The first check (`step` "check freeze"): a break-glass request goes on to its own
    gate. Again later: only the very freeze its break-glass approvals were given for lets
    it through; one begun since refuses it (or is waited out), flag or no flag."""
    patches.retired(FREEZE_WINDOWS)
    frozen = (await in_force(wf, policy) if adhoc is None
              else freeze.in_force(policy.freeze, adhoc, policy.env, workflow.now()))
    first = step == "check freeze"
    while frozen is not None:
        if through is not None and (frozen.kind, frozen.name) == (through.kind, through.name):
            return frozen
        if first and getattr(req, "break_glass", False):
            assert wf.state is not None
            wf.state.notes.append(f"break-glass: {frozen.describe()}")
            return frozen
        if not getattr(req, "after_freeze", False):
            raise StepFailed(step, refusal(frozen), "Frozen", refused=True)
        await wait_out(wf, frozen)
        frozen = await in_force(wf, policy)
    return None


async def wait_out(wf: KeplerWorkflow, frozen: ActiveFreeze) -> None:
    """A durable timer to the freeze's end (an ad-hoc one is looked at again every few
    minutes: it may be lifted early)."""
    wf.set_stage(f"waiting for freeze {frozen.name} to end at {frozen.until:%Y-%m-%d %H:%M:%S} UTC")
    wait = frozen.until - workflow.now()
    if frozen.kind == "ad-hoc":
        wait = min(wait, RECHECK)
    await workflow.sleep(max(wait, timedelta(seconds=1)))


async def break_glass_gate(wf: KeplerWorkflow, policy: EnvironmentPolicy, through: str,
                           reason: str, what: str, digests: Sequence[str],
                           commits: Sequence[str]) -> list[Approval]:
    """The gate a break-glass change takes instead of the environment's usual one (through
    a freeze, or off a promotion path: `through` says which): signed approvals of exactly
    this run, digests and commits, naming the break-glass, from at least two of the
    environment's approvers (more if its minimum is higher), never the requester; notified
    to every channel before and after; the apply-time check asks for them too."""
    assert wf.state is not None
    usual = policy.approval
    requester = wf.requester.name if wf.requester else wf.state.requested_by
    others = [a for a in usual.approvers if a != requester]
    needed = max(BREAK_GLASS_APPROVALS, usual.min_approvals if usual.required else 0)
    if len(others) < needed:
        raise StepFailed("break-glass approval", f"break_glass: {policy.env} lists "
                         f"{len(others)} approver(s) other than {requester} "
                         f"({', '.join(others) or 'none'}), and a break-glass needs {needed}",
                         "Refused", refused=True)
    text = f"BREAK-GLASS {what} {through}; reason: {reason}"
    await wf.notify("break_glass", text + f"; needs {needed} of {', '.join(others)}")
    gate = usual.model_copy(update={"required": True, "min_approvals": needed})
    approvals = await wf.approval_gate(gate, text, digests=digests, commits=commits,
                                       operation=f"{BREAK_GLASS} {wf.state.operation.value}")
    who = ", ".join(a.approver for a in approvals)
    wf.state.notes.append(f"break-glass approved by {who}: {reason}")
    await wf.notify("break_glass", f"{text}; approved by {who}: it goes through")
    return approvals
