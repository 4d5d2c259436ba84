"""A canary's controls: the pause, resume, promote and abort updates (a mixin of Canary).

Each is a signed decision for exactly the running run (workflows/common/controls.py); who
may give it (README: Canary):
- abort: any verified person: it puts back (traffic to stable, the canary to 0); and the
  alert receiver, with its signed request of the alert action on this service and env;
- pause and resume: in an environment whose policy requires approval, the verified
  requester or one of its approvers; elsewhere any verified person;
- promote: it skips the remaining analysis, so where approval is required only one of the
  environment's approvers other than the verified requester (four eyes); elsewhere any
  verified person.
Validators refuse anything else at once; the handlers check again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import ABORT, PAUSE, PROMOTE, RESUME
    from kepler.canary import CanaryControl
    from kepler.identity import AllowedSigners, Identity, SignedStatement
    from kepler.models import CanaryProgress, OperationStatus
    from workflows.common.controls import fingerprint, verify_alert_abort, verify_control
    from workflows.common.requester import refused_in_handler
    from workflows.common.trust import Untrusted

if TYPE_CHECKING:
    from kepler.canary import CanaryState


class CanaryControls:
    state: OperationStatus | None
    cs: "CanaryState | None"
    phase: str
    signers: AllowedSigners
    requester: Identity | None

    if TYPE_CHECKING:  # RequestAuthority's (workflows/common/requester.py), in the lifecycle
        def knows_signer_of(self, signed: SignedStatement | None) -> bool: ...
        async def read_signers_for(self, signed: SignedStatement | None) -> None: ...
    _abort: CanaryControl | None
    _promote: CanaryControl | None
    _approve_promotion: bool

    def __init__(self) -> None:
        super().__init__()
        self._controls_used: set[str] = set()

    @property
    def progress(self) -> CanaryProgress:  # the Canary's
        raise NotImplementedError

    # --- who may -------------------------------------------------------------------------------

    def _allowed(self, verb: str, control: CanaryControl) -> str:
        """Who gives `control`, verified; ValueError naming the canary and the rule when
        they may not."""
        assert self.state is not None
        try:
            return self._signer_of(verb, control)
        except (Untrusted, ValueError) as e:
            raise ValueError(f"{self.state.service}@{self.state.env}: {e}") from None

    def _signer_of(self, verb: str, control: CanaryControl) -> str:
        assert self.state is not None
        if verb == "abort" and control.signed and control.signed.statement.action == "request":
            # the alert receiver's (activities/alerts.py), signed as itself
            who = verify_alert_abort(control.signed, self.state.service, self.state.env,
                                     self.signers, self._controls_used, workflow.now())
        else:
            who = verify_control(control.signed, verb, "canary", self.state.service,
                                 self.state.env, self.signers, self._controls_used, workflow.now())
        if control.by != who.name:
            raise ValueError(f"{verb}: signed by {who}, but the control names {control.by}")
        policy = self.cs.policy.approval if self.cs is not None else None
        if verb == "abort" or policy is None or not policy.required:
            return str(who)
        requester = self.requester.name if self.requester else ""
        if verb == "promote" and (who.name not in policy.approvers or who.name == requester):
            raise ValueError(f"promote: {who.name} may not promote the canary in {self.state.env}: "
                             "it skips the analysis, so only an approver other than the "
                             f"requester may (approvers: {', '.join(policy.approvers)})")
        if verb in ("pause", "resume") and who.name not in (requester, *policy.approvers):
            raise ValueError(f"{verb}: {who.name} may not {verb} the canary in {self.state.env} "
                             f"(the requester {requester or '-'} or an approver: "
                             f"{', '.join(policy.approvers)})")
        return str(who)

    def _allowed_or_deferred(self, verb: str, control: CanaryControl) -> None:
        """The validator's check, unless the control is signed by a passkey new to this run:
        the handler checks it once it has read the signers again."""
        if self.knows_signer_of(control.signed):
            self._allowed(verb, control)

    def _accept(self, verb: str, control: CanaryControl) -> str:
        """The handler's check again; the control is then used."""
        who = self._allowed(verb, control)
        if control.signed is not None:
            self._controls_used.add(fingerprint(control.signed))
        return who

    def _refuse_unless(self, ok: bool, why: str) -> None:
        if not ok:
            raise ValueError(f"{self.state.service}@{self.state.env}: {why}" if self.state else why)

    # --- the updates ----------------------------------------------------------------------------

    @workflow.update(name=PAUSE.name)
    async def pause(self, control: CanaryControl) -> str:
        await self.read_signers_for(control.signed)
        with refused_in_handler():
            who = self._accept("pause", control)
        self.progress.paused, self.progress.paused_by = True, who
        self.state.notes.append(f"paused by {who}" + (f": {control.reason}" if control.reason else ""))
        return f"paused at {self.progress.weight}%; analysis continues"

    @pause.validator
    def _validate_pause(self, control: CanaryControl) -> None:
        self._refuse_unless(self.progress.strategy != "blue-green", "a blue-green release does not "
                            "pause: promote it, or kepler rollback")
        self._refuse_unless(self.phase == "analysing", f"the canary is {self._phase_text()}")
        self._refuse_unless(not self.progress.paused, f"already paused by {self.progress.paused_by}")
        self._allowed_or_deferred("pause", control)

    @workflow.update(name=RESUME.name)
    async def resume(self, control: CanaryControl) -> str:
        await self.read_signers_for(control.signed)
        with refused_in_handler():
            who = self._accept("resume", control)
        self.progress.paused, self.progress.paused_by = False, ""
        self.state.notes.append(f"resumed by {who}")
        return f"resumed at {self.progress.weight}%"

    @resume.validator
    def _validate_resume(self, control: CanaryControl) -> None:
        self._refuse_unless(self.phase == "analysing", f"the canary is {self._phase_text()}")
        self._refuse_unless(self.progress.paused, "the canary is not paused")
        self._allowed_or_deferred("resume", control)

    @workflow.update(name=PROMOTE.name)
    async def promote(self, control: CanaryControl) -> str:
        await self.read_signers_for(control.signed)
        with refused_in_handler():
            who = self._accept("promote", control)
        self._promote = control.model_copy(update={"by": who})
        self.state.notes.append(f"promotion requested by {who}")
        return "promoting: remaining steps skipped" + (
            "; approval still required" if self.phase == "analysing" and self._approve_promotion else "")

    @promote.validator
    def _validate_promote(self, control: CanaryControl) -> None:
        self._refuse_unless(self.phase in ("analysing", "window") and not self._promote
                            and not self._abort, f"the canary is {self._phase_text()}")
        self._allowed_or_deferred("promote", control)

    @workflow.update(name=ABORT.name)
    async def abort(self, control: CanaryControl) -> str:
        await self.read_signers_for(control.signed)
        with refused_in_handler():
            who = self._accept("abort", control)
        self._abort = control.model_copy(update={"by": who})
        if getattr(self, "switched", False):
            return "switching back: all traffic to the previous version, still warm"
        return "aborting: traffic goes back to stable and the canary scales to 0"

    @abort.validator
    def _validate_abort(self, control: CanaryControl) -> None:
        self._refuse_unless(self.phase != "done" and not self._abort,
                            f"the canary is {self._phase_text()}")
        self._allowed_or_deferred("abort", control)

    def _phase_text(self) -> str:
        if self._abort:
            return "already aborting"
        if self._promote:
            return "already promoting"
        return {"preparing": "not analysing yet", "analysing": "analysing", "approval":
                "waiting for approval", "promoting": "promoting", "done": "finished",
                "switching": "switching", "window": "in its rollback window"}[self.phase]
