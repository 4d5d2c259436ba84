"""How a runbook stops: a step that failed, or an end it chose (rejected, aborted, ...).
The lifecycle in workflows/base.py turns either into the operation's outcome."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from kepler.models import Outcome
from kepler.contracts import error_type


class StepFailed(Exception):
    def __init__(self, step: str, cause: str, error_type: str = "", bad_input: bool = False,
                 refused: bool = False) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause
        self.error_type = error_type
        self.bad_input = bad_input  # the request breaks a rule the starter could not check
        self.refused = refused  # the requester may not do this (CLI exit 3)

    def describe(self) -> str:
        return f"step '{self.step}' failed: {self.cause}"


class OperationEnded(Exception):
    """The runbook ends the operation with `outcome` (a canary's failure limit, an abort,
    a rejected approval); what it changed is undone first."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome

    def describe(self) -> str:
        return str(self)


def failure(message: str, outcome: str, not_put_back: list[str] | None = None) -> ApplicationError:
    """The final error of a workflow: non-retryable, typed by outcome (KeplerRolledBack, ...);
    its details list what was not put back, so a parent (a train) can tell the truth too."""
    return ApplicationError(message, *(not_put_back or []), type=error_type(outcome),
                            non_retryable=True)


def not_put_back_of(error: BaseException) -> list[str]:
    """What a failed child workflow said it could not put back (see `failure`)."""
    while getattr(error, "cause", None) is not None and not isinstance(error, ApplicationError):
        error = error.cause  # type: ignore[assignment]
    return [str(d) for d in getattr(error, "details", ()) or ()]
