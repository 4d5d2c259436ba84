"""Freeze windows where the change is applied: `kubernetes.apply_release` against the
sandbox's Kubernetes, run as a given workflow type and run (ActivityEnvironment sets the
activity info Temporal would). During one of the platform's windows, a release writes an
image only with two verified break-glass approvals of that image for that run, by prod's
approvers other than the requester — whatever the workflow passes; a rollback is never
stopped."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes.workloads import DeploymentActivities
from kepler.freeze import EnvironmentFreeze, FreezeWindow
from kepler.settings import Platform
from tests.security.test_apply_time import (  # noqa: F401 - fixtures
    IMAGE, RUN, approval, box, change, image_now, platform,
)

NEXT = IMAGE.replace("a" * 64, "9" * 64)


def frozen(p: Platform) -> Platform:
    now = datetime.now(timezone.utc)
    window = FreezeWindow(name="year-end", reason="year-end", start=now - timedelta(hours=1),
                          end=now + timedelta(hours=1))
    return p.model_copy(update={"freeze": {"prod": EnvironmentFreeze(windows=[window])}})


def run_as(kind: str, fn: Any, *args: Any) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=RUN[0], workflow_run_id=RUN[1],
                                   workflow_type=kind)
    return env.run(fn, *args)


def glass(who: str, p: Platform, **fields: Any) -> Any:
    return approval(who, p, image=NEXT, operation="break-glass release", **fields)


@pytest.mark.parametrize("case,approvals", [
    ("the usual approval", lambda p: [approval("alice", p, image=NEXT)]),
    ("one break-glass approval", lambda p: [glass("alice", p)]),
    ("one approver twice", lambda p: [glass("alice", p), glass("alice", p)]),
    ("the requester's own", lambda p: [glass("alice", p), glass("carol", p)]),
    ("someone not listed for prod", lambda p: [glass("alice", p), glass("mallory", p)]),
    ("another run's", lambda p: [glass("alice", p), glass("bob", p, run_id="run-0")]),
])
def test_a_release_in_a_window_needs_two_break_glass_approvals(
        platform: Platform, case: str, approvals: Any) -> None:  # noqa: F811
    p = frozen(platform)
    before = image_now(p)
    with pytest.raises(ApplicationError) as e:
        run_as("ReleaseVersion", DeploymentActivities(p).apply_release,
               change(p, approvals=approvals(p)).model_copy(update={"image": NEXT}))
    assert e.value.type == "Unauthorized", case
    assert "window 'year-end'" in str(e.value) and "of 2 verified break-glass approvals" in str(e.value)
    assert image_now(p) == before, case


def test_two_break_glass_approvals_let_it_through_and_a_rollback_needs_none(platform: Platform) -> None:  # noqa: F811
    p = frozen(platform)
    before = image_now(p)
    result = run_as("ReleaseVersion", DeploymentActivities(p).apply_release, change(
        p, approvals=[glass("alice", p), glass("bob", p)]).model_copy(update={"image": NEXT}))
    assert result.changed and image_now(p) == NEXT
    # a rollback (approved as its policy says) is applied whatever the window
    back = run_as("Rollback", DeploymentActivities(p).apply_release, change(
        p, approvals=[approval("alice", p, image=before)]).model_copy(update={"image": before}))
    assert back.changed and image_now(p) == before


def hook(p: Platform, kind: str, approvals: Any, image: str = NEXT) -> Any:
    from kepler.hooks import HookRelease, StartHook, job_name
    from kepler.payloads import ReleaseTarget

    auth = change(p, approvals=approvals).authorization
    return StartHook(release=HookRelease(target=ReleaseTarget(env="prod", namespace="vault-prod",
                                                              service="vault"), image=image),
                     name=job_name("vault", RUN[1], kind), hook=kind, command=["./migrate", kind],
                     timeout=60, authorization=auth)


def hook_jobs(p: Platform) -> list[str]:
    from activities.kubernetes.client import Clusters

    return sorted(j["metadata"]["name"] for j in Clusters(p)("prod").list("Job", "vault-prod", "")
                  if j["metadata"]["name"].startswith("vault-"))


def test_a_hook_job_in_a_window_needs_break_glass_and_its_undo_outlives_the_approvals(
        platform: Platform) -> None:  # noqa: F811
    """A pre_deploy migration is a change to prod like an apply: during a window, not with
    the usual approval; with two break-glass approvals it runs. Its undo then runs for this
    run even once those approvals have expired — it undoes what was approved then — while
    an undo of an image this run never migrated still needs valid approvals."""
    from activities.kubernetes.hooks import HookActivities

    p = frozen(platform)
    before = hook_jobs(p)
    with pytest.raises(ApplicationError) as e:
        run_as("ReleaseVersion", HookActivities(p).start_job,
               hook(p, "pre_deploy", [approval("alice", p, image=NEXT)]))
    assert e.value.type == "Unauthorized" and "window 'year-end'" in str(e.value)
    assert hook_jobs(p) == before
    run_as("ReleaseVersion", HookActivities(p).start_job,
           hook(p, "pre_deploy", [glass("alice", p), glass("bob", p)]))
    old = [glass("alice", p, issued_at=datetime.now(timezone.utc) - timedelta(days=30)),
           glass("bob", p, issued_at=datetime.now(timezone.utc) - timedelta(days=30))]
    run_as("ReleaseVersion", HookActivities(p).start_job, hook(p, "undo", old))
    with pytest.raises(ApplicationError) as e:  # not this run's migration: approvals needed
        run_as("ReleaseVersion", HookActivities(p).start_job, hook(p, "undo", old, image=IMAGE))
    assert e.value.type == "Unauthorized"
