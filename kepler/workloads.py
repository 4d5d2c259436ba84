"""What a service runs as and what it mounts: the service spec's `type` (deployment or
cronjob), its schedule, and its volumes (existing PersistentVolumeClaims and
ConfigMaps). Paths are checked here, once: a mount may not hide a system path."""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kepler.validation import DnsSubdomain


class Model(BaseModel):
    """Every Kepler model: unknown fields are refused (re-exported by kepler.models)."""
    model_config = ConfigDict(extra="forbid", frozen=False)


CONFIG_MOUNT = "/etc/kepler/config"  # where the service's own config_files appear
# Never mounted over, nor anywhere inside: the kernel's, the runtime's and Kubernetes' own.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64",
                "/boot", "/var/run/secrets", "/run/secrets")
# Never mounted over exactly (a mount inside them, e.g. /etc/myapp, is fine).
SYSTEM_DIRS = ("/", "/etc", "/var", "/run", "/var/run", "/root", "/home")


def mount_path(value: str) -> str:
    """An absolute, normalised path that hides no system path."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path (got {value[:80]!r})")
    if len(value) > 255 or any(ord(c) < 0x20 or c in "\\:" for c in value):
        raise ValueError("must be at most 255 characters, without control characters, '\\' or ':'")
    parts = value.split("/")[1:]
    if any(p in (".", "..") for p in parts) or "//" in value or (
            value != "/" and value.endswith("/")):
        raise ValueError(f"must be a normalised path: no '.', '..', '//' or trailing '/' "
                         f"(got {value[:80]!r}; did you mean {posixpath.normpath(value)!r}?)")
    for tree in SYSTEM_TREES:
        if value == tree or value.startswith(tree + "/") or tree.startswith(value.rstrip("/") + "/"):
            raise ValueError(f"must not be a system path: {value!r} would hide or write into "
                             f"{tree}")
    if value in SYSTEM_DIRS:
        raise ValueError(f"must not be a system path: mounting over {value!r} hides the image's "
                         f"own files (mount a directory inside it instead)")
    return value


class Volume(Model):
    """An existing PersistentVolumeClaim or ConfigMap of the environment's namespace,
    mounted into the service's container."""
    claim: DnsSubdomain | None = Field(None, description="PersistentVolumeClaim name")
    config_map: DnsSubdomain | None = Field(None, description="ConfigMap name (files, read-only)")
    mount_path: str
    read_only: bool = False

    @field_validator("mount_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return mount_path(value)

    @model_validator(mode="after")
    def _one_source(self) -> "Volume":
        if (self.claim is None) == (self.config_map is None):
            raise ValueError("a volume names exactly one of claim or config_map")
        if self.config_map is not None:
            self.read_only = True  # ConfigMap volumes are read-only in Kubernetes
        return self

    @property
    def source(self) -> str:
        return f"claim {self.claim}" if self.claim else f"ConfigMap {self.config_map}"


class Schedule(Model):
    """A cronjob service's schedule (`type: cronjob`)."""
    cron: str = Field(description="5-field cron expression or @hourly/@daily/...")
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Forbid"
    run_on_release: bool = Field(True, description=(
        "each release runs the new image once now, as a Job that must succeed, else the "
        "release rolls back"))
    active_deadline: int = Field(600, ge=10, le=86400, description="seconds a run may take")
    backoff_limit: int = Field(0, ge=0, le=10, description="retries of a failed scheduled run")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from kepler import cron

        return cron.validate(value)


def check_volumes(volumes: list[Volume], config_mount: str) -> None:
    """No two mounts at one path or one inside another, nor over the config mount."""
    paths = [(v.mount_path, v.source) for v in volumes] + [(config_mount, "config_files")]
    for i, (a, src_a) in enumerate(paths):
        for b, src_b in paths[i + 1:]:
            if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                raise ValueError(f"volumes: {src_a} at {a} and {src_b} at {b} overlap")
