"""Who asked, verified: every operation's request authority (workflows/base.py composes it).

The request's signature is verified when the workflow reads its policy (`identify`): a bad
signature, or none where the operation will need approval, fails before any change; a
signed request starts one run (`claim_request`). `authorization` is what the activity that
applies a change checks again (activities/authorization.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from activities.temporal import TemporalActivities
    from kepler.identity import CLOCK_SKEW, AllowedSigners, Identity, RequestUse, SignedStatement
    from kepler.payloads import Authorization
    from workflows.common.errors import StepFailed
    from workflows.common.options import QUICK, RETRY
    from workflows.common.trust import Untrusted, for_schedule, verify_request

if TYPE_CHECKING:
    from kepler.models import OperationStatus


# Retired patch (deprecated in 0.2.0): gates take signed decisions only.
SIGNED_APPROVALS = "kepler-signed-approvals"
MAX_SIGNER_READS = 20  # a run reads the signers again at most this often (unknown passkeys)
UNSIGNED = ("the request is not signed: an operation that needs approval takes signed requests "
            "only (the kepler CLI and chat-ops sign them)")


@contextmanager
def refused_in_handler() -> Iterator[None]:
    """An update's handler checking what its validator deferred: a rule the update breaks
    fails the update (an ApplicationError), never the workflow task."""
    try:
        yield
    except ValueError as e:
        raise ApplicationError(str(e), type="Unauthorized", non_retryable=True) from None


class RequestAuthority:
    state: OperationStatus | None

    def __init__(self) -> None:
        self.request: Any = None  # what the workflow was started with (its signature)
        self.signers = AllowedSigners()
        self.requester: Identity | None = None  # verified; None: the request is not signed
        self._identified = False
        self._claimed = False
        self.gate_approvals: list[SignedStatement] = []  # the last gate's, signed (a train's)
        self._signer_reads = 0
        # a blue-green run: `request` is the signed release request that handed over to it
        # (its predecessor, which Temporal's history must show: claim_request)
        self.handed_over = False

    def knows_signer_of(self, signed: SignedStatement | None) -> bool:
        """Whether this run can judge `signed` with the signers it holds: False for a
        passkey they do not list (enrolled after the run read them), which the update's
        handler reads them again for (`read_signers_for`); validators defer to it."""
        if signed is None or signed.passkey is None or self._signer_reads >= MAX_SIGNER_READS:
            return True
        return any(k.credential_id == signed.passkey.credential_id for k in self.signers.passkeys)

    async def read_signers_for(self, signed: SignedStatement | None) -> None:
        """Read the platform's signers again when `signed` is a passkey this run does not
        know yet (an activity: the handler then verifies against what the platform lists)."""
        if self.knows_signer_of(signed):
            return
        self._signer_reads += 1
        self.signers = await workflow.execute_activity_method(
            PlatformActivities.signers, summary="read the signers again (a passkey new to this run)",
            start_to_close_timeout=QUICK.start_to_close,
            schedule_to_close_timeout=QUICK.schedule_to_close, retry_policy=RetryPolicy(**RETRY))

    def authorization(self, gate: str = "approval", approvals: list[SignedStatement] | None = None,
                      train: str = "", request: SignedStatement | None = None) -> Authorization:
        """What the activity applying a change checks again (activities/authorization.py)."""
        return Authorization(gate=gate, request=request or getattr(self.request, "signed", None),
                             approvals=list(self.gate_approvals if approvals is None else approvals),
                             first_run_id=workflow.info().first_execution_run_id, train=train)

    def identify(self, signers: AllowedSigners, gated: bool) -> None:
        """Verify the request's signature against the signers the platform lists now
        (once, at the first policy read): the signer's key valid now and the request fresh
        (trust.py); a bad signature, or none where the operation will need approval
        (`gated`), fails before any change."""
        if self._identified:
            return
        self._identified = True
        assert self.state is not None
        self.signers = signers
        info = workflow.info()
        try:
            who = verify_request(self.request, signers, self.state, info.workflow_id,
                                 now=workflow.now(),
                                 continued=info.continued_run_id is not None,
                                 parent_id=info.parent.workflow_id if info.parent else "",
                                 operation="release" if self.handed_over else "")
        except Untrusted as e:
            raise StepFailed("verify request", str(e), "Unauthorized", bad_input=True) from None
        if who is not None:
            self.requester = who
            self.state.requested_by, self.state.requester_verified = str(who), True
        elif gated:
            patches.retired(SIGNED_APPROVALS)
            raise StepFailed("verify request", UNSIGNED, "Unauthorized", bad_input=True)

    async def claim_request(self) -> None:
        """A signed request starts one run: refuse it, before any change, when another run
        of this workflow id was started with the very same signed request (found by the
        activity in Temporal's own records). A release schedule's is for every fire."""
        signed: SignedStatement | None = getattr(self.request, "signed", None)
        if self._claimed or signed is None:
            return
        self._claimed = True
        info = workflow.info()
        if for_schedule(signed.statement, info.parent.workflow_id if info.parent else ""):
            return
        used: str = await workflow.execute_activity_method(
            TemporalActivities.request_used,
            RequestUse(signature=signed.proof(), since=signed.statement.issued_at - CLOCK_SKEW,
                       handed_over=self.handed_over),
            summary="check the signed request started no other run",
            start_to_close_timeout=QUICK.start_to_close,
            schedule_to_close_timeout=QUICK.schedule_to_close, retry_policy=RetryPolicy(**RETRY))
        if used:
            raise StepFailed("verify request", f"signed request: already used by run {used} of "
                             f"{info.workflow_id}; a signed request starts one run (sign a new "
                             "one)", "Unauthorized", bad_input=True)
