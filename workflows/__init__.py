"""Workflows: deterministic code only. Each lives in its own importable module, named in
the registry of operations (kepler/contracts.py).

The package imports nothing itself: Temporal's sandbox re-imports a workflow's module,
package included, for every workflow run, so importing every workflow here made each
run re-execute all of them (bench/RESULTS.md). `workflows.ALL` and `workflows.<Name>`
are resolved on first use instead.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    from kepler.contracts import BY_WORKFLOW, OPERATIONS

    if name == "ALL":
        return [__getattr__(o.workflow) for o in OPERATIONS]
    if name in BY_WORKFLOW:
        return getattr(importlib.import_module(f"workflows.{BY_WORKFLOW[name].module}"), name)
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
