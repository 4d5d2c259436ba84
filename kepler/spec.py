"""The service spec: `.kepler/service.yaml` in each service's repository, validated once
here (a bad value is refused before any side effect, naming the field and the rule)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kepler.validation import (
    ConfigKey, DnsSubdomain, Duration, EnvName, EnvVarName, Quantity, ServiceName, UserName,
)
from kepler.workloads import (
    CONFIG_MOUNT, Model, Schedule, Volume, check_volumes, mount_path,
)

# one argument of a hook's command: 1-1024 characters, no control characters but tab/newline
HookArg = Annotated[str, Field(min_length=1, max_length=1024,
                               pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")]


SPEC_PATH = ".kepler/service.yaml"  # a service's spec, in its GitLab project

class Resources(Model):
    cpu_request: Quantity = "100m"
    memory_request: Quantity = "128Mi"
    cpu_limit: Quantity = "500m"
    memory_limit: Quantity = "256Mi"


class Autoscaling(Model):
    min_replicas: int = Field(1, ge=1, le=100)
    max_replicas: int = Field(3, ge=1, le=100)
    cpu_utilization: int = Field(80, ge=1, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class Hook(Model):
    """A command run once as a Job with the release's image, env and config."""
    command: list[HookArg] = Field(min_length=1, max_length=32, description="argv, e.g. "
                                   "[alembic, upgrade, head]")
    timeout: int = Field(300, ge=10, le=3600, description="seconds the Job may run")

    @field_validator("command")
    @classmethod
    def _short(cls, value: list[str]) -> list[str]:
        if sum(len(a) for a in value) > 4096:
            raise ValueError("must total at most 4096 characters")
        return value


class PreDeployHook(Hook):
    undo: Hook | None = Field(None, description="run when the release is undone after this "
                              "hook ran (or failed), and on a rollback away from this version")


class Hooks(Model):
    """Release hooks (argo-rollouts#1422): pre_deploy before the new pods (and before a
    canary takes traffic), post_deploy once they are ready."""
    pre_deploy: PreDeployHook | None = None
    post_deploy: Hook | None = None


class EnvironmentOverride(Model):
    """Per-environment settings a service may choose. Approval policy is not here:
    it is platform-owned (kepler.yaml), so nobody can waive it with a commit."""
    replicas: int | None = Field(None, ge=0, le=100)
    resources: Resources | None = None
    env: dict[EnvVarName, str] = Field(default_factory=dict)
    strategy: Literal["rolling", "blue-green"] = Field("rolling", description=(
        "how a release reaches this environment: rolling (the Deployment rolls in place) or "
        "blue-green (the new version beside the live one, then one route switch)"))


Strategy = Literal["rolling", "blue-green"]


class BlueGreen(Model):
    """How a blue-green release runs (README: Blue-green). The green version comes up as
    `<service>-canary` beside the live one, reachable with the header `x-canary: always`."""
    preview_analysis: int = Field(0, ge=0, le=50, description=(
        "passing analysis rounds of the green version before the switch (0: none)"))
    preview_mirror: int = Field(0, ge=0, le=100, description=(
        "% of live traffic copied to the green version during the preview analysis (0: none; "
        "not for idempotent: false)"))
    post_analysis: int = Field(0, ge=0, le=50, description=(
        "passing analysis rounds at 100% after the switch; a failure switches back"))
    interval: Duration = Field(timedelta(seconds=30), description="between rounds, 10s-1h")
    failure_limit: int = Field(1, ge=1, le=20, description="failed rounds before switching back")
    approve_switch: bool = Field(False, description=(
        "an approval at the switch itself (besides the environment's own approval policy)"))
    rollback_window: Duration = Field(timedelta(minutes=15), description=(
        "how long the old version stays warm after the switch, for an instant switch-back "
        "(kepler rollback); 1m-24h"))

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(hours=1):
            raise ValueError("must be between 10s and 1h")
        return value

    @field_validator("rollback_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(hours=24):
            raise ValueError("must be between 1m and 24h")
        return value


class ServiceSpec(Model):
    name: ServiceName
    team: DnsSubdomain
    template: Literal["go", "python", "java", "node", "static", "custom"] = "python"
    dockerfile: str | None = Field(None, description="path of the Dockerfile when template is custom")
    port: int = Field(8080, ge=1, le=65535)
    replicas: int = Field(2, ge=0, le=100)
    resources: Resources = Field(default_factory=Resources)
    health_path: str = Field("/healthz", pattern=r"^/[A-Za-z0-9._~/-]{0,200}$")
    env: dict[EnvVarName, str] = Field(default_factory=dict)
    config_files: dict[ConfigKey, str] = Field(default_factory=dict)
    exposure: Literal["internal", "external"] = "internal"
    host: DnsSubdomain | None = None
    mesh: bool = True
    owners: list[UserName] = Field(default_factory=list)
    autoscaling: Autoscaling | None = None
    min_available: int | None = Field(None, ge=0, le=100, description="PodDisruptionBudget")
    environments: dict[EnvName, EnvironmentOverride] = Field(default_factory=dict)
    type: Literal["deployment", "cronjob"] = "deployment"
    schedule: Schedule | None = Field(None, description="required when type is cronjob")
    volumes: list[Volume] = Field(default_factory=list, max_length=20)
    config_mount_path: str = CONFIG_MOUNT
    hooks: Hooks | None = None
    idempotent: bool = Field(True, description=(
        "false: a request changes something beyond the service (a payment, an email): a canary "
        "refuses to mirror live traffic to it"))
    blue_green: BlueGreen = Field(default_factory=BlueGreen, description=(
        "how blue-green releases run (environments.<env>.strategy: blue-green)"))

    @field_validator("config_mount_path")
    @classmethod
    def _config_mount(cls, value: str) -> str:
        return mount_path(value)

    @model_validator(mode="after")
    def _workload(self) -> "ServiceSpec":
        if self.type == "cronjob":
            if self.schedule is None:
                raise ValueError("schedule is required when type is cronjob")
            if self.hooks is not None:
                raise ValueError("hooks are for type deployment (a cronjob's run is its check)")
            if any(o.strategy != "rolling" for o in self.environments.values()):
                raise ValueError("strategy blue-green is for type deployment (a cronjob has no "
                                 "traffic to switch)")
            if self.exposure == "external" or self.autoscaling or self.min_available is not None:
                raise ValueError("a cronjob has no Service: exposure external, autoscaling and "
                                 "min_available are for type deployment")
        elif self.schedule is not None:
            raise ValueError("schedule is only for type cronjob")
        check_volumes(self.volumes, self.config_mount_path)
        if self.blue_green.preview_mirror and not self.idempotent:
            raise ValueError("blue_green.preview_mirror: a service that is idempotent: false "
                             "gets no copies of live traffic")
        return self

    @field_validator("env", "config_files")
    @classmethod
    def _small_values(cls, value: dict[str, str]) -> dict[str, str]:
        if sum(len(k) + len(v) for k, v in value.items()) > 512 * 1024:
            raise ValueError("must total at most 512 KiB")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceSpec":
        if self.exposure == "external" and not self.host:
            raise ValueError("host is required when exposure is external")
        if self.template == "custom" and not self.dockerfile:
            raise ValueError("dockerfile is required when template is custom")
        if self.dockerfile and (self.dockerfile.startswith("/") or ".." in self.dockerfile.split("/")):
            raise ValueError("dockerfile must be a relative path inside the repository")
        return self

    def replicas_in(self, env: str) -> int:
        override = self.environments.get(env)
        return override.replicas if override and override.replicas is not None else self.replicas

    def strategy_in(self, env: str) -> Strategy:
        override = self.environments.get(env)
        return override.strategy if override else "rolling"

    def resources_in(self, env: str) -> Resources:
        override = self.environments.get(env)
        return override.resources if override and override.resources else self.resources

    def env_in(self, env: str) -> dict[str, str]:
        override = self.environments.get(env)
        return {**self.env, **(override.env if override else {})}


