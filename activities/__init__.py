"""Activities: all I/O, one module per external system."""

from __future__ import annotations

from typing import Any, Callable

from kepler.settings import Platform, Secrets


def build(platform: Platform, secrets: Secrets) -> list[Callable[..., Any]]:
    """Every activity, bound to this worker's configuration."""
    from activities.notify import NotifyActivities

    notify = NotifyActivities()
    return [notify.notify]
