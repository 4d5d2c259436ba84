"""Cronjob services and volumes: what their workflows and activities exchange."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from kepler.models import Model, Outcome
from kepler.requests import EnvRequest
from kepler.payloads import ReleaseTarget


class RunJobRequest(EnvRequest):
    """`kepler job run SERVICE --env ENV`: run a cronjob service once, now."""


class StartJob(Model):
    """Create Job `name` from the CronJob's template (idempotent: an existing one is kept)."""
    target: ReleaseTarget
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    annotations: dict[str, str] = Field(default_factory=dict)


class JobRef(Model):
    target: ReleaseTarget
    name: str
    image: str = ""
    created: bool = False
    active_deadline: int = 600  # seconds, from the Job's spec


class WaitJob(Model):
    job: JobRef
    timeout: timedelta


class JobResult(Model):
    name: str
    outcome: Literal["succeeded", "failed"]
    detail: str = ""
    log_tail: list[str] = Field(default_factory=list)


class JobReport(Model):
    service: str
    env: str
    outcome: Outcome
    job: str = ""
    image: str = ""
    error: str = ""
    log_tail: list[str] = Field(default_factory=list)


class VolumeCheck(Model):
    """The claims and ConfigMaps a service mounts must exist in the env's namespace."""
    env: str
    namespace: str
    claims: list[str] = Field(default_factory=list)
    config_maps: list[str] = Field(default_factory=list)


def job_name(service: str, run_id: str, kind: str = "run") -> str:
    """`<service>-<kind>-<10 hex of the run id>`: stable across retries of one run, unique
    across runs (the run id's random end: a UUIDv7 starts with the time)."""
    return f"{service}-{kind}-{run_id.replace('-', '')[-10:]}"
