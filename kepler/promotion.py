"""Promotion: release to an environment exactly what is live and healthy in the one before
it — the digest, commit and config tested there, never a ref resolved again (`kepler
release SERVICE --env prod --from staging`). Paths and soaks are platform policy
(`promotion:` in kepler.yaml)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ConfigDict, Field

from kepler.validation import Duration, EnvName
from kepler.workloads import Model


class PromotionPath(Model):
    """`promotion.<env>`: where the environment's releases come from, and how long a
    release must have been live there first."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: EnvName = Field(alias="from", description="the environment promoted from")
    soak: Duration = Field(timedelta(0), description=(
        "how long the release must have been live and healthy in `from` first"))


class LiveRelease(Model):
    """What runs in one environment now, from the workload and its release history."""
    exists: bool = False
    healthy: bool = False
    detail: str = ""  # why it is not healthy
    image: str = ""  # by digest
    commit: str = ""
    version: str = ""
    since: datetime | None = None  # when Kepler recorded it live and healthy
