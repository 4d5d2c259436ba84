"""Patch markers, as few as a run can do with (docs/architecture.md, "Patches").

Every `workflow.patched` or `deprecate_patch` call a run makes costs it a marker event and
an upsert of TemporalChangeVersion (a visibility write on the server): a staging release
made five, a fifth of its history. A run begun on a baseline writes one marker instead, and
that one stands for every patch the baseline includes: it takes their new branches and
writes none of their markers. Each baseline includes every patch of the ones before it. Runs
begun before the first replay as they were recorded, marker by marker.
"""

from __future__ import annotations

from temporalio import workflow

# Newest first. kepler-0.2.2: every patch of 0.2.x up to it (patched or retired);
# kepler-0.2.3: those, and a release's apply, rollout wait and record in one activity.
BASELINES = ("kepler-0.2.3", "kepler-0.2.2")
BASELINE = BASELINES[0]  # what a run begun today writes
FIRST_BASELINE = BASELINES[-1]


def _baseline_of_run() -> int:
    """The index in BASELINES of the baseline the run began on; len(BASELINES): none.
    The same calls in every run and every replay, newest first, stopping at the first the
    run began on: a new run writes the newest marker only (the SDK memoizes each answer)."""
    for index, baseline in enumerate(BASELINES):
        if workflow.patched(baseline):
            return index
    return len(BASELINES)


def begun_on(baseline: str = FIRST_BASELINE) -> bool:
    """The run began on `baseline` or a later one."""
    return _baseline_of_run() <= BASELINES.index(baseline)


def begun_on_baseline() -> bool:
    """The run began on a baseline (any: each includes the first)."""
    return begun_on(FIRST_BASELINE)


def retired(patch_id: str) -> None:
    """A retired patch's call site (was `workflow.deprecate_patch(patch_id)`): consumes
    the marker of a run begun before the first baseline; writes nothing in a run begun on one."""
    if not begun_on_baseline():
        workflow.deprecate_patch(patch_id)


def since(patch_id: str) -> bool:
    """`workflow.patched(patch_id)` for a patch the first baseline includes: True in a run
    begun on a baseline (no marker of its own) or with the patch's own marker."""
    return begun_on_baseline() or workflow.patched(patch_id)
