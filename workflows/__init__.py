"""Workflows: deterministic code only. Each lives in its own importable module.

The package imports nothing itself: Temporal's sandbox re-imports a workflow's module,
package included, for every workflow run, so importing every workflow here made each
run re-execute all of them (bench/RESULTS.md). `workflows.ALL` and `workflows.<Name>`
are resolved on first use instead.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "CreateService": "create", "ReleaseVersion": "release", "Rollback": "rollback",
    "Decommission": "decommission", "Canary": "canary", "RunJob": "job",
    "AlertAction": "alert", "ReleaseTrain": "train", "Scale": "scale",
    "SetResources": "scale", "ScheduledRelease": "schedule",
}


def __getattr__(name: str) -> Any:
    if name == "ALL":
        return [__getattr__(n) for n in _MODULE_OF]
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"workflows.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
