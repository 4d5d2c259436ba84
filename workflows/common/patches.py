"""Patch markers, as few as a run can do with (docs/architecture.md, "Patches").

Every `workflow.patched` or `deprecate_patch` call a run makes costs it a marker event and
an upsert of TemporalChangeVersion (a visibility write on the server): a staging release
made five, a fifth of its history. A run begun on BASELINE writes one marker instead, and
that one stands for every patch BASELINE includes: it takes their new branches and writes
none of their markers. Runs begun before it replay as they were recorded, marker by marker.
"""

from __future__ import annotations

from temporalio import workflow

# Every patch of 0.2.x (patched or retired) is in it; a patch of a later release is not.
BASELINE = "kepler-0.2.2"


def begun_on_baseline() -> bool:
    """The run began on BASELINE (the SDK memoizes the answer for the run)."""
    return workflow.patched(BASELINE)


def retired(patch_id: str) -> None:
    """A retired patch's call site (was `workflow.deprecate_patch(patch_id)`): consumes
    the marker of a run begun before BASELINE; writes nothing in a run begun on it."""
    if not begun_on_baseline():
        workflow.deprecate_patch(patch_id)


def since(patch_id: str) -> bool:
    """`workflow.patched(patch_id)` for a patch BASELINE includes: True in a run begun on
    BASELINE (no marker of its own) or with the patch's own marker."""
    return begun_on_baseline() or workflow.patched(patch_id)
