"""Derived names, in one place, so workflows, activities and starters agree."""

from __future__ import annotations

MANAGED_BY = {"app.kubernetes.io/managed-by": "kepler"}
ANNOTATION_PREFIX = "kepler.dev/"
RELEASE_ID = ANNOTATION_PREFIX + "release-id"
COMMIT = ANNOTATION_PREFIX + "commit"
REQUESTED_BY = ANNOTATION_PREFIX + "requested-by"
VERSION = ANNOTATION_PREFIX + "version"
CONFIG_HASH = ANNOTATION_PREFIX + "config-hash"
CREATED_BY_RUN = ANNOTATION_PREFIX + "created-by-run"
# Kepler's own release history on the workload (newest first): what was live and healthy
HISTORY = ANNOTATION_PREFIX + "history"
HISTORY_LENGTH = 10


def workflow_id(service: str, env: str) -> str:
    """The lock: one mutating operation per service and environment at a time."""
    return f"{service}@{env}"


def service_workflow_id(service: str) -> str:
    """Create and decommission span every environment."""
    return f"{service}@all"


def canary_name(service: str) -> str:
    return f"{service}-canary"


def config_map_name(service: str) -> str:
    return f"{service}-config"


def jenkins_job(service: str) -> str:
    return f"kepler-{service}"


def image_repository(group: str, service: str) -> str:
    return f"{group}/{service}"


def labels(service: str, version: str = "stable") -> dict[str, str]:
    return {"app": service, "version": version, **MANAGED_BY}
