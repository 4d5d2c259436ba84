"""Scale and resources: operational overrides of a service in one environment.

An override lives on the Deployment itself, as annotations (`kepler.dev/replicas`,
`kepler.dev/resources`), next to what runs: ReleaseVersion and Rollback read them
from the snapshot they take anyway and keep them, so the next release does not
reset a scale-out. (Committing to the service spec instead would tie the override
to one branch and one commit: releasing another ref, or rolling back to an older
commit, would silently drop it.) `--reset` removes the override.
"""

from __future__ import annotations

import json
import re

from pydantic import Field, model_validator

from kepler import naming
from kepler.models import Model, Outcome
from kepler.requests import EnvRequest
from kepler.spec import Resources
from kepler.settings import Bounds
from kepler.payloads import Authorization, ReleaseTarget
from kepler.validation import Quantity

REPLICAS = naming.ANNOTATION_PREFIX + "replicas"
RESOURCES = naming.ANNOTATION_PREFIX + "resources"
OVERRIDE_KEYS = (REPLICAS, RESOURCES)

_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def quantity_value(q: str) -> float:
    m = _QUANTITY.fullmatch(q)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Overrides(Model):
    """What `kepler scale|resources` set, read back from the Deployment's annotations."""
    replicas: int | None = None
    resources: Resources | None = None

    @classmethod
    def from_annotations(cls, annotations: dict[str, str]) -> "Overrides":
        """The overrides a workload carries; ValueError naming the annotation when one is
        not what `kepler scale|resources` writes (someone edited it by hand)."""
        replicas = annotations.get(REPLICAS) or None
        resources = annotations.get(RESOURCES) or None
        try:
            count = int(replicas) if replicas else None
            if count is not None and count < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"annotation {REPLICAS}: {replicas[:40]!r} is not a replica count "
                             f"(edited by hand?): fix or remove it with kubectl annotate") from None
        try:
            limits = Resources.model_validate(json.loads(resources)) if resources else None
        except ValueError:
            raise ValueError(f"annotation {RESOURCES}: {resources[:80]!r} is not what kepler "
                             f"resources writes (edited by hand?): fix or remove it with kubectl "
                             f"annotate") from None
        return cls(replicas=count, resources=limits)

    def annotations(self) -> dict[str, str | None]:
        """The override annotations to set; None removes one."""
        return {REPLICAS: str(self.replicas) if self.replicas is not None else None,
                RESOURCES: self.resources.model_dump_json() if self.resources else None}


def bounds_problems(bounds: Bounds, replicas: int | None, resources: Resources | None) -> list[str]:
    """Why a change goes over the environment's bounds; empty when it does not."""
    return _past(replicas, resources, bounds.max_replicas, bounds.max_cpu, bounds.max_memory,
                 "over", "maximum")


def minimum_problems(bounds: Bounds, replicas: int | None,
                     resources: Resources | None) -> list[str]:
    """Why an override goes under the environment's minimums; empty when it does not."""
    return _past(replicas, resources, bounds.min_replicas, bounds.min_cpu, bounds.min_memory,
                 "under", "minimum")


def _past(replicas: int | None, resources: Resources | None, replica_bound: int, cpu: str,
          memory: str, side: str, bound: str) -> list[str]:
    def beyond(value: float, limit: float) -> bool:
        return value > limit if side == "over" else value < limit

    problems = []
    if replicas is not None and beyond(replicas, replica_bound):
        problems.append(f"replicas: {replicas} is {side} this environment's {bound} of "
                        f"{replica_bound}")
    if resources is not None:
        for field, limit in (("cpu_request", cpu), ("cpu_limit", cpu),
                             ("memory_request", memory), ("memory_limit", memory)):
            value = getattr(resources, field)
            if beyond(quantity_value(value), quantity_value(limit)):
                problems.append(f"{field.replace('_', ' ')}: {value} is {side} this "
                                f"environment's {bound} of {limit}")
    return problems


def describe_resources(resources: Resources | None) -> str:
    """One line for a gate and a report: `cpu 100m/500m, memory 128Mi/256Mi` (request/limit)."""
    r = resources or Resources()
    return (f"cpu {r.cpu_request}/{r.cpu_limit}, memory {r.memory_request}/{r.memory_limit} "
            "(request/limit)")


def request_problems(resources: Resources) -> list[str]:
    problems = []
    for kind in ("cpu", "memory"):
        req, lim = getattr(resources, f"{kind}_request"), getattr(resources, f"{kind}_limit")
        if quantity_value(req) > quantity_value(lim):
            problems.append(f"{kind}: the request {req} is over the limit {lim}")
    return problems


class ScaleRequest(EnvRequest):
    replicas: int | None = Field(None, ge=0, le=1000, description="None with reset: back to the spec")
    reset: bool = False

    @model_validator(mode="after")
    def _one(self) -> "ScaleRequest":
        if (self.replicas is None) == (not self.reset):
            raise ValueError("replicas: give a number of replicas, or reset (not both)")
        return self


class ResourcesRequest(EnvRequest):
    """Each given quantity replaces the running one; a limit not given follows its
    request when the request would exceed it."""
    cpu: Quantity | None = None
    memory: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None
    reset: bool = False

    @model_validator(mode="after")
    def _something(self) -> "ResourcesRequest":
        given = [self.cpu, self.memory, self.cpu_limit, self.memory_limit]
        if self.reset == any(given):
            raise ValueError("cpu: give --cpu, --memory (and/or their limits), or reset (not both)")
        return self

    def applied_to(self, current: Resources) -> Resources:
        out = current.model_copy()
        for kind in ("cpu", "memory"):
            req, lim = getattr(self, kind), getattr(self, f"{kind}_limit")
            if req:
                setattr(out, f"{kind}_request", req)
            if lim:
                setattr(out, f"{kind}_limit", lim)
            elif req and quantity_value(req) > quantity_value(getattr(out, f"{kind}_limit")):
                setattr(out, f"{kind}_limit", req)
        return out


# --- activities' contract ------------------------------------------------------------------

class DeploymentState(Model):
    """A Deployment's replicas, container resources and Kepler's override annotations."""
    target: ReleaseTarget
    exists: bool = False
    replicas: int = 0
    resources: Resources | None = None
    overrides: Overrides = Field(default_factory=Overrides)
    generation: int = 0
    commit: str = ""  # of the running release, from its annotation
    image: str = ""  # what runs (by digest): what an approval of the change names


class ApplyOverrides(Model):
    """Set replicas and/or resources and the override annotations, exactly."""
    target: ReleaseTarget
    replicas: int | None = None
    resources: Resources | None = None
    overrides: Overrides
    requested_by: str = ""
    operation_id: str = ""
    # what the activity checks again where approval is required (activities/authorization.py
    # authorize_override); None: a run from before, or an environment that needs none
    authorization: Authorization | None = None
    undo: bool = False  # putting back what the run read: never bounded


class ScaleReport(Model):
    service: str
    env: str
    outcome: Outcome
    previous_replicas: int = 0
    replicas: int = 0
    previous_resources: Resources | None = None
    resources: Resources | None = None
    override: Overrides = Field(default_factory=Overrides)
    error: str = ""
    undone: list[str] = Field(default_factory=list)
