"""Issue 26, item 10: with `promotion: {prod: {from: staging}}`, prod takes only what staging
ran, live and healthy for the soak — wherever the change enters. Here the apply-time
check: `kubernetes.apply_release` against the sandbox's Kubernetes, run as a given
workflow run (ActivityEnvironment), with the platform's own policy: it reads staging's
release history itself and writes nothing into prod that staging did not run, whatever
approvals the run carries — unless two of them are break-glass approvals of that image."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests, naming
from kepler.identity import Statement
from kepler.models import ReleaseRequest
from kepler.settings import Platform, parse_platform
from kepler.spec import ServiceSpec
from kepler.steps import (
    ApplyObjects, ApplyRelease, Authorization, RecordRelease, ReleaseRecord, ReleaseTarget,
)
from sandbox.serve import Sandbox
from starter.signing import sign, signing_key
from tests.conftest import platform_yaml
from tests.helpers import sandbox_fixture, signed

box = sandbox_fixture("promotion-paths", seconds_per_replica=0.05)
REPO = "127.0.0.1:5000/demo/orbit@sha256:"
TESTED, UNTESTED = REPO + "a" * 64, REPO + "b" * 64
RUN = ("orbit@prod", "run-1")
COMMIT = "c" * 40


def target(env: str) -> ReleaseTarget:
    return ReleaseTarget(env=env, namespace=f"orbit-{env}", service="orbit")


def run_as(workflow_id: str, run_id: str, fn: Any, *args: Any) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id=run_id,
                                   workflow_type="ReleaseVersion")
    return env.run(fn, *args)


@pytest.fixture(scope="module")
def platform(box: Sandbox) -> Iterator[Platform]:
    """orbit in staging runs TESTED, recorded live and healthy (as a release records it)."""
    p = parse_platform(platform_yaml(box.urls, "127.0.0.1:1", "unused"))
    assert p.promotion["prod"].source == "staging"  # the shipped kepler.yaml's path
    k8s = DeploymentActivities(p)
    spec = ServiceSpec(name="orbit", team="t", replicas=1)
    for env in ("staging", "prod"):
        ActivityEnvironment().run(k8s.apply_objects, ApplyObjects(
            env=env, manifests=manifests.for_environment(spec, env, f"orbit-{env}"), run_id="r0"))
    request = signed(ReleaseRequest(service="orbit", env="staging", ref="main",
                                    requested_by="carol")).signed
    run_as("orbit@staging", "s1", k8s.apply_release, change(TESTED, "staging", Authorization(
        request=request)))
    ActivityEnvironment().run(k8s.record_release, RecordRelease(target=target("staging"), record=(
        ReleaseRecord(image=TESTED, commit=COMMIT, version="main", at=datetime.now(timezone.utc),
                      release_id="orbit@staging/s1", requested_by="carol"))))
    yield p


def approval(who: str, p: Platform, image: str, operation: str = "release") -> Any:
    return sign(Statement(action="approve", operation=operation, service="orbit", env="prod",
                          workflow_id=RUN[0], run_id=RUN[1], gate=1, digests=[image],
                          issued_at=datetime.now(timezone.utc)), signing_key(p, who))


def change(image: str, env: str, authorization: Authorization) -> ApplyRelease:
    return ApplyRelease(target=target(env), image=image, replicas=1, config={},
                        resources=ServiceSpec(name="x", team="t").resources,
                        annotations={naming.COMMIT: COMMIT}, authorization=authorization)


def prod_change(image: str, *approvals: Any) -> ApplyRelease:
    request = signed(ReleaseRequest(service="orbit", env="prod", ref="main",
                                    requested_by="carol")).signed
    return change(image, "prod", Authorization(request=request, approvals=list(approvals)))


def image_in_prod(p: Platform) -> str:
    return ActivityEnvironment().run(DeploymentActivities(p).snapshot, target("prod")).image


def test_an_image_staging_never_ran_is_not_written_into_prod_even_approved(platform: Platform) -> None:
    before = image_in_prod(platform)
    with pytest.raises(ApplicationError) as e:
        run_as(*RUN, DeploymentActivities(platform).apply_release,
               prod_change(UNTESTED, approval("alice", platform, UNTESTED)))
    assert e.value.type == "Unauthorized"
    assert (f"refused at apply time: {UNTESTED} was not live and healthy in staging" in str(e.value)
            and "promotion.prod.from: staging" in str(e.value))
    assert image_in_prod(platform) == before


def test_an_image_not_yet_soaked_in_staging_is_not_written(platform: Platform) -> None:
    soaking = platform.model_copy(update={"promotion": {"prod": platform.promotion["prod"].model_copy(
        update={"soak": timedelta(hours=1)})}})
    before = image_in_prod(platform)
    with pytest.raises(ApplicationError, match="was not live and healthy in staging for 1:00:00"):
        run_as(*RUN, DeploymentActivities(soaking).apply_release,
               prod_change(TESTED, approval("alice", platform, TESTED)))
    assert image_in_prod(platform) == before


def test_one_break_glass_approval_is_not_enough(platform: Platform) -> None:
    before = image_in_prod(platform)
    with pytest.raises(ApplicationError, match="nor has this run two verified break-glass"):
        run_as(*RUN, DeploymentActivities(platform).apply_release, prod_change(
            UNTESTED, approval("alice", platform, UNTESTED, "break-glass release")))
    assert image_in_prod(platform) == before


def test_what_staging_ran_is_written_and_break_glass_goes_through(platform: Platform) -> None:
    k8s = DeploymentActivities(platform)
    assert run_as(*RUN, k8s.apply_release, prod_change(TESTED, approval("alice", platform, TESTED))).changed
    assert image_in_prod(platform) == TESTED
    glass = [approval(who, platform, UNTESTED, "break-glass release") for who in ("alice", "bob")]
    assert run_as(*RUN, k8s.apply_release, prod_change(UNTESTED, *glass)).changed
    assert image_in_prod(platform) == UNTESTED


def test_putting_back_what_was_live_in_prod_stays_allowed(platform: Platform) -> None:
    """A rollback (`history` gate) to an image prod's own history has: no path check."""
    k8s = DeploymentActivities(platform)
    back = REPO + "d" * 64
    ActivityEnvironment().run(k8s.record_release, RecordRelease(target=target("prod"), record=(
        ReleaseRecord(image=back, commit=COMMIT, at=datetime.now(timezone.utc) - timedelta(days=1),
                      release_id="orbit@prod/old"))))
    request = signed(ReleaseRequest(service="orbit", env="prod", ref="main",
                                    requested_by="carol")).signed
    assert run_as(*RUN, k8s.apply_release, change(back, "prod", Authorization(
        gate="history", request=request))).changed
    assert image_in_prod(platform) == back
