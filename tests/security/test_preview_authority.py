"""A Preview run's authority over namespaces, derived from its workflow id as Temporal knows
it (activities/authority.py): its own service's namespace for its own merge request, in the
previews' environment; never the environment's own namespace, another merge request's, or a
namespace of another environment. Any other run may not name a preview's namespace."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.authority import CallingRun, check_namespaces, preview_of
from kepler.payloads import ReleaseTarget
from kepler.previews import PreviewTarget
from kepler.settings import Platform, load_platform


@pytest.fixture
def platform() -> Platform:
    p = load_platform()
    return p.model_copy(update={"previews": p.previews.model_copy(update={"env": "staging"})})


def run(workflow_id: str, workflow_type: str = "Preview") -> CallingRun:
    return CallingRun(workflow_id=workflow_id, run_id="r1", first_run_id="r1",
                      workflow_type=workflow_type, task_queue="kepler", parent=("", ""))


def check(platform: Platform, caller: CallingRun, arg: Any) -> None:
    check_namespaces(platform, arg, preview=preview_of(caller))


def test_a_preview_names_its_own_namespace(platform: Platform) -> None:
    me = run("preview/kite/7")
    check(platform, me, PreviewTarget(env="staging", namespace="kite-staging-mr-7", service="kite", mr=7))
    check(platform, me, ReleaseTarget(env="staging", namespace="kite-staging-mr-7", service="kite"))


@pytest.mark.parametrize("caller,arg,why", [
    (run("preview/kite/7"), ReleaseTarget(env="staging", namespace="kite-staging", service="kite"),
     "names namespace 'kite-staging'"),
    (run("preview/kite/7"), PreviewTarget(env="staging", namespace="kite-staging-mr-8",
                                          service="kite", mr=8), "names namespace 'kite-staging-mr-8'"),
    (run("preview/kite/7"), ReleaseTarget(env="prod", namespace="kite-prod-mr-7", service="kite"),
     "a preview runs in staging"),
    (run("preview/kite/7"), ReleaseTarget(env="staging", namespace="other-staging-mr-7",
                                          service="other"), "other lives in 'other-staging'"),
    (run("kite@staging", "ReleaseVersion"), ReleaseTarget(env="staging", namespace="kite-staging-mr-7",
                                                          service="kite"), "kite lives in 'kite-staging'"),
])
def test_anything_else_is_refused(platform: Platform, caller: CallingRun, arg: Any, why: str) -> None:
    with pytest.raises(ApplicationError, match=why) as e:
        check(platform, caller, arg)
    assert e.value.type == "Unauthorized" and e.value.non_retryable


def test_a_preview_run_under_another_id_is_refused() -> None:
    for workflow_id in ("preview/kite", "preview/kite/seven", "kite@staging", "preview/kite/7/x",
                        "preview/kite/042", "preview/kite/\u00b2", "preview/kite/0"):
        with pytest.raises(ApplicationError, match="not a preview's id"):
            preview_of(run(workflow_id))
