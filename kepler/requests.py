"""What every operation request is: whom it is about (`subject`), the one line that
describes it (`summary`) and, for an operation with an id of its own, that id. The
client (kepler/clients/operations.py) asks the request, never its type; the registry
(kepler/contracts.py) says which workflow takes it and which lock its id takes.

Most requests share one envelope (`SignedRequest`: who asks, signed, why); those about
one service in one environment add both (`EnvRequest`).
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from kepler.identity import SignedStatement
from kepler.validation import EnvName, ServiceName, UserName
from kepler.workloads import Model


class Subject(NamedTuple):
    """Whom an operation request is about, as its search attributes say."""
    service: str
    env: str  # "all" for a service-wide operation
    version: str  # "" when it has none
    requested_by: str


class OperationRequest(Model):
    def subject(self) -> Subject:
        raise NotImplementedError(type(self).__name__)

    def describe(self, operation: str) -> str:
        """One line for the Temporal UI and the starters; `operation` is the registry's word."""
        who = self.subject()
        text = (f"{operation} {who.service}" + (f" {who.version}" if who.version else "")
                + (f" to {who.env}" if who.env != "all" else "") + f" by {who.requested_by}")
        reason = getattr(self, "reason", "")
        return text + (f": {reason}" if reason else "")

    def own_workflow_id(self) -> str:
        """The id of an operation whose lock is its own ("own", "named")."""
        raise TypeError(f"{type(self).__name__}: its id is its lock's")


class SignedRequest(OperationRequest):
    """The envelope: who asks, their signature of exactly this request, and why."""
    requested_by: UserName
    signed: SignedStatement | None = Field(None, description=(
        "the requester's signed statement of this request (kepler/identity.py)"))
    reason: str = Field("", max_length=500)


class EnvRequest(SignedRequest):
    """A request about one service in one environment (its lock: `<service>@<env>`)."""
    service: ServiceName
    env: EnvName

    def version(self) -> str:
        """What the Temporal UI shows as the version ("" when there is none)."""
        return ""

    def subject(self) -> Subject:
        return Subject(self.service, self.env, self.version(), self.requested_by)
