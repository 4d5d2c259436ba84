"""Release trains: several services released as one operation, in dependency order.

The request is validated here, before any side effect: each member once, every
`depends_on` names another member, and no dependency cycle.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from kepler.models import Model, Outcome
from kepler.requests import SignedRequest, Subject
from kepler.validation import EnvName, GitRef, ServiceName

TRAIN_PREFIX = "train-"


class TrainMember(Model):
    service: ServiceName
    ref: GitRef
    depends_on: list[ServiceName] = Field(default_factory=list)


class TrainRequest(SignedRequest):
    name: ServiceName = Field(description="the train's name; its workflow id is train-<name>@<env>")
    env: EnvName
    members: list[TrainMember] = Field(min_length=1, max_length=50)
    after_freeze: bool = Field(False, description=(
        "during a freeze, wait and start when it ends, instead of being refused"))

    @model_validator(mode="after")
    def _graph(self) -> "TrainRequest":
        names = [m.service for m in self.members]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"members: each service may appear once ({', '.join(twice)} repeated)")
        for m in self.members:
            unknown = [d for d in m.depends_on if d not in names]
            if unknown:
                raise ValueError(f"members.{m.service}.depends_on: {', '.join(unknown)} "
                                 f"{'is' if len(unknown) == 1 else 'are'} not a member of the train")
            if m.service in m.depends_on:
                raise ValueError(f"members.{m.service}.depends_on: a service cannot depend on itself")
        waves(self.members)  # raises on a cycle
        return self

    @property
    def service(self) -> str:
        """The name the train shows under in the UI and `kepler status|history`."""
        return TRAIN_PREFIX + self.name

    def subject(self) -> Subject:
        return Subject(self.service, self.env, "", self.requested_by)


def waves(members: list[TrainMember]) -> list[list[str]]:
    """Members grouped so each group depends only on earlier groups (Kahn's algorithm),
    each group in the order the request lists them. Raises ValueError naming a cycle."""
    pending = {m.service: set(m.depends_on) for m in members}
    order = [m.service for m in members]
    done: set[str] = set()
    result: list[list[str]] = []
    while pending:
        ready = [s for s in order if s in pending and pending[s] <= done]
        if not ready:
            raise ValueError("members: dependency cycle: " + _cycle(pending, done))
        result.append(ready)
        done.update(ready)
        for s in ready:
            del pending[s]
    return result


def _cycle(pending: dict[str, set[str]], done: set[str]) -> str:
    start = next(iter(pending))
    path, node = [start], start
    while True:
        node = sorted(pending[node] - done)[0]
        if node in path:
            loop = path[path.index(node):] + [node]
            return " -> ".join(loop)
        path.append(node)



class MemberResult(Model):
    service: str
    ref: str
    wave: int
    outcome: str = "pending"  # pending | running | succeeded | failed | rolled_back | not_started | ...
    commit: str = ""
    image: str = ""
    previous_image: str = ""
    error: str = ""
    rollback: str = ""  # what the train did to undo this member's release, if anything


class TrainReport(Model):
    name: str
    env: str
    outcome: Outcome = "running"
    members: list[MemberResult] = Field(default_factory=list)
    rolled_back: list[str] = Field(default_factory=list, description="in the order undone")
    error: str = ""
    approved_by: list[str] = Field(default_factory=list)

    def member(self, service: str) -> MemberResult:
        return next(m for m in self.members if m.service == service)
