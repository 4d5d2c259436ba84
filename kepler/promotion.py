"""Promotion: release to an environment exactly what is live and healthy in the one before
it — the digest, commit and config tested there, never a ref resolved again (`kepler
release SERVICE --env prod --from staging`). Paths and soaks are platform policy
(`promotion:` in kepler.yaml); with `auto: true` a successful release in the source
offers itself to an AutoPromotion workflow (`promote-<service>@<target>`) that waits the
soak on a durable timer and then asks for the target's release."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict, Field

from kepler.models import ReleaseReport
from kepler.validation import Duration, EnvName, ServiceName, UserName
from kepler.workloads import Model
from kepler.requests import OperationRequest, Subject

AUTO_PREFIX = "promote-"
MAX_SOAK = timedelta(days=30)
PromotionOutcome = Literal["running", "succeeded", "failed", "rolled_back", "cancelled", "rejected",
                           "expired", "stale", "skipped"]


class PromotionPath(Model):
    """`promotion.<env>`: where the environment's releases come from, how long a release
    must have been live there first, and whether Kepler offers each one by itself."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: EnvName = Field(alias="from", description="the environment promoted from")
    soak: Duration = Field(timedelta(0), le=MAX_SOAK, description=(
        "how long the release must have been live and healthy in `from` first"))
    verify_with_prometheus: bool = Field(False, description=(
        "also ask Prometheus about the release in `from` before promoting it"))
    auto: bool = Field(False, description=(
        "a successful release in `from` starts its promotion here: after the soak, it asks "
        "for this environment's approval (a newer release in `from` supersedes it)"))


class AutoPromotionConfig(Model):
    """`auto_promotion:` the identity automatic promotions are requested as. Its key is
    the worker's, listed as kepler-system: it never approves, so the target's approvers
    still decide."""
    identity: UserName = Field("promotions", description="who automatic promotions are requested as")
    signing_key: str | None = Field(None, description=(
        "the worker's key for signing them (relative: inside the Kepler home)"))


class LiveRelease(Model):
    """What runs in one environment now, from the workload and its release history."""
    exists: bool = False
    healthy: bool = False
    detail: str = ""  # why it is not healthy
    image: str = ""  # by digest
    commit: str = ""
    version: str = ""
    since: datetime | None = None  # when Kepler recorded it live and healthy
    replicas: int = 0


class AutoPromotionRequest(OperationRequest):
    """A release live in `source`, offered for promotion to `target`."""
    service: ServiceName
    source: EnvName
    target: EnvName
    image: str = Field(max_length=400)
    commit: str = Field(pattern=r"^[0-9a-f]{7,64}$")
    version: str = Field("", max_length=200)
    since: datetime  # when it went live in `source`: the soak counts from here
    release_id: str = Field(max_length=300)  # the source release's run, to tell offers apart
    requested_by: UserName = "promotions"

    def subject(self) -> Subject:
        return Subject(self.service, self.target, self.version or self.commit[:12],
                       self.requested_by)

    def own_workflow_id(self) -> str:
        return auto_workflow_id(self.service, self.target)

    def describe(self, operation: str) -> str:
        return (f"promote {self.service} {self.subject().version} from {self.source} to "
                f"{self.target} (automatic)")


class AutoPromotionReport(Model):
    outcome: PromotionOutcome = "running"
    stage: str = "starting"
    detail: str = ""
    candidate: AutoPromotionRequest | None = None
    soak_until: datetime | None = None
    superseded: list[str] = Field(default_factory=list)  # versions a newer offer replaced
    release_id: str = ""  # the target's ReleaseVersion, once asked for
    release: ReleaseReport | None = None


def auto_workflow_id(service: str, target: str) -> str:
    return f"{AUTO_PREFIX}{service}@{target}"


def live_release_of(deploy: dict[str, Any] | None, history: list[Any], image: str,
                    where: str) -> LiveRelease:
    """A Deployment's live release (`history`: its kepler.dev/history, newest first): what
    Kepler recorded live, if it still runs exactly that, fully rolled out and available."""
    if deploy is None:
        return LiveRelease(detail=f"no Deployment {where}")
    live = LiveRelease(exists=True, image=image, replicas=deploy["spec"].get("replicas", 1))
    if not history or history[0].image != image:
        return live.model_copy(update={"detail": f"{image} is not a release Kepler recorded live"})
    head = history[0]
    live = live.model_copy(update={"commit": head.commit, "version": head.version, "since": head.at})
    if live.replicas < 1:  # scaled to zero serves nothing: it has soaked nothing
        return live.model_copy(update={"detail": f"{image} runs no replicas"})
    if not rolled_out(deploy):
        return live.model_copy(update={"detail": f"{image} is not fully rolled out and available"})
    return live.model_copy(update={"healthy": True})


def rolled_out(deploy: dict[str, Any]) -> bool:
    """Every replica of the Deployment's current generation updated and available."""
    status, replicas = deploy.get("status") or {}, deploy["spec"].get("replicas", 1)
    available = any(c.get("type") == "Available" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
    return (available and status.get("observedGeneration", 0) >= deploy["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) >= replicas
            and status.get("availableReplicas", 0) >= replicas)


def soaked_in(history: list[Any], image: str, soak: timedelta, now: datetime) -> bool:
    """`image` was live and healthy in the environment `history` is of (its kepler.dev/history,
    newest first) for at least `soak`: from when it was recorded live until the next release
    was (or until `now`, for the one live there last)."""
    until = now
    for record in history:
        if record.image == image and until - record.at >= soak:
            return True
        until = record.at
    return False


def soak_left(history: list[Any], image: str, soak: timedelta, now: datetime) -> timedelta | None:
    """How much longer `image` must stay live where `history` is of before it has soaked
    (`soaked_in`): zero once it has, None when it is not the release recorded live last
    there (no soak is counting for it)."""
    if soaked_in(history, image, soak, now):
        return timedelta(0)
    if not history or history[0].image != image:
        return None
    return soak - (now - history[0].at)
