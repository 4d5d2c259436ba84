"""The check where the change is applied: `kubernetes.apply_release` against the sandbox's
Kubernetes, run as a given workflow run (the SDK's ActivityEnvironment sets the activity
info Temporal would), with the platform's own policy and signers. Whatever a workflow
passes, a prod Deployment takes an image only with enough valid approvals of that image
for that run; nothing is written otherwise."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubernetes.istio import IstioActivities
from activities.kubernetes.workloads import DeploymentActivities
from kepler import manifests, naming
from kepler.identity import Statement
from kepler.models import ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.settings import Platform, parse_platform
from kepler.payloads import (
    ApplyObjects, ApplyRelease, Authorization, DeployRelease, ReleaseRecord, ReleaseTarget, RouteWeights,
)
from sandbox.serve import Sandbox
from starter.signing import sign, signing_key
from tests.conftest import platform_yaml
from tests.helpers import sandbox_fixture, signed

box = sandbox_fixture("apply-time", seconds_per_replica=0.05)
IMAGE = "127.0.0.1:5000/demo/vault@sha256:" + "a" * 64
RUN = ("vault@prod", "run-1")
TRAIN, COMMIT = "train-x@prod", "c" * 40


@pytest.fixture(scope="module")
def platform(box: Sandbox) -> Iterator[Platform]:
    p = parse_platform(platform_yaml(box.urls, "127.0.0.1:1", "unused"))
    p.promotion.clear()  # the approval rules alone (promotion paths: test_promotion_paths.py)
    k8s = DeploymentActivities(p)
    spec = ServiceSpec(name="vault", team="t", replicas=1)
    ActivityEnvironment().run(k8s.apply_objects, ApplyObjects(
        env="prod", manifests=manifests.for_environment(spec, "prod", "vault-prod"), run_id="r0"))
    yield p


def run_as(workflow_id: str, run_id: str, fn: Any, *args: Any) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id=run_id)
    return env.run(fn, *args)


def approval(who: str, p: Platform, workflow_id: str = RUN[0], run_id: str = RUN[1],
             image: str = IMAGE, age: timedelta = timedelta(0), **fields: Any) -> Any:
    statement = Statement(**{"action": "approve", "operation": "release", "service": "vault",
                             "env": "prod", "workflow_id": workflow_id, "run_id": run_id,
                             "gate": 1, "digests": [image],
                             "issued_at": datetime.now(timezone.utc) - age, **fields})
    return sign(statement, signing_key(p, who))


def change(p: Platform, **auth: Any) -> ApplyRelease:
    request = signed(ReleaseRequest(service="vault", env="prod", ref="main", requested_by="carol")).signed
    return ApplyRelease(target=ReleaseTarget(env="prod", namespace="vault-prod", service="vault"),
                        image=IMAGE, replicas=1, config={}, resources=ServiceSpec(name="x", team="t").resources,
                        annotations={naming.COMMIT: COMMIT},
                        authorization=Authorization(request=request, **auth))


def image_now(p: Platform) -> str:
    return ActivityEnvironment().run(DeploymentActivities(p).snapshot,
                                     ReleaseTarget(env="prod", namespace="vault-prod", service="vault")).image


@pytest.mark.parametrize("case,approvals", [
    ("none", lambda p: []),
    ("the requester's own", lambda p: [approval("carol", p)]),
    ("someone not listed for prod", lambda p: [approval("mallory", p)]),
    ("another run's", lambda p: [approval("alice", p, run_id="run-0")]),
    ("another image's", lambda p: [approval("alice", p, image=IMAGE.replace("a" * 64, "b" * 64))]),
    ("an expired one", lambda p: [approval("alice", p, age=timedelta(days=8))]),
    ("one dated in the future", lambda p: [approval("alice", p, age=-timedelta(hours=1))]),
    ("a train's of this commit but another digest", lambda p: [approval(
        "alice", p, workflow_id=TRAIN, run_id="t1", operation="train", service="train-x",
        commits=[COMMIT], image=IMAGE.replace("a" * 64, "b" * 64))]),
])
def test_without_a_valid_approval_nothing_is_written(platform: Platform, case: str, approvals: Any) -> None:
    before = image_now(platform)
    with pytest.raises(ApplicationError) as e:
        run_as(*RUN, DeploymentActivities(platform).apply_release,
               change(platform, approvals=approvals(platform), train=TRAIN))
    assert e.value.type == "Unauthorized" and "refused at apply time: 0 of 1 valid approvals" in str(e.value)
    assert image_now(platform) == before, case


def config_now(p: Platform) -> dict[str, str] | None:
    return ActivityEnvironment().run(DeploymentActivities(p).snapshot,
                                     ReleaseTarget(env="prod", namespace="vault-prod", service="vault")).config


@pytest.mark.parametrize("authorized", ["unapproved", "absent"])
def test_a_refused_release_writes_no_config_either(platform: Platform, authorized: str) -> None:
    """The ConfigMap passes the same check as the Deployment, before it: a refused
    release leaves prod's config as it was (it was replaced before the check once)."""
    before = config_now(platform)
    evil = change(platform).model_copy(update={"config": {"app.conf": "mode=evil\n"}})
    if authorized == "absent":
        evil = evil.model_copy(update={"authorization": None})
    with pytest.raises(ApplicationError) as e:
        run_as(*RUN, DeploymentActivities(platform).apply_release, evil)
    assert e.value.type == "Unauthorized"
    assert config_now(platform) == before != {"app.conf": "mode=evil\n"}


def test_the_one_step_deploy_writes_nothing_unapproved(platform: Platform) -> None:
    """kubernetes.deploy_release (apply, rollout wait and record in one activity) makes the
    same check before anything: no image, no config, no release history written."""
    target = ReleaseTarget(env="prod", namespace="vault-prod", service="vault")
    before = ActivityEnvironment().run(DeploymentActivities(platform).snapshot, target)
    other = IMAGE.replace("a" * 64, "d" * 64)  # an image no test ever approves
    evil = change(platform, approvals=[approval("carol", platform, image=other)]).model_copy(
        update={"image": other, "config": {"app.conf": "mode=evil\n"}})
    record = ReleaseRecord(image=other, at=datetime.now(timezone.utc), release_id="/".join(RUN))
    with pytest.raises(ApplicationError) as e:
        run_as(*RUN, DeploymentActivities(platform).deploy_release,
               DeployRelease(release=evil, timeout=timedelta(seconds=30), record=record))
    assert e.value.type == "Unauthorized" and "refused at apply time" in str(e.value)
    after = ActivityEnvironment().run(DeploymentActivities(platform).snapshot, target)
    assert (after.image, after.config, after.history) == (before.image, before.config, before.history)
    assert after.image != other


def test_a_rollback_claiming_history_is_checked_against_the_workload(platform: Platform) -> None:
    with pytest.raises(ApplicationError, match="was never live for vault in prod"):
        run_as(*RUN, DeploymentActivities(platform).apply_release, change(platform, gate="history"))


def test_a_valid_approval_of_this_run_and_image_applies(platform: Platform) -> None:
    result = run_as(*RUN, DeploymentActivities(platform).apply_release,
                    change(platform, approvals=[approval("alice", platform)]))
    assert result.changed and image_now(platform) == IMAGE


def test_traffic_goes_to_a_canary_only_when_its_image_is_approved(platform: Platform) -> None:
    """The canary's route weights are checked where they are set: `istio.set_routes` reads
    the image the canary Deployment runs and wants approvals of that image for this run."""
    other = IMAGE.replace("a" * 64, "c" * 64)
    spec = ServiceSpec(name="vault", team="t", replicas=1)
    ActivityEnvironment().run(DeploymentActivities(platform).apply_objects, ApplyObjects(
        env="prod", run_id="r0", manifests=[manifests.deployment(
            spec, "prod", "vault-prod", name="vault-canary", version="canary", image=other,
            replicas=0)]))
    istio = IstioActivities(platform)
    weights = RouteWeights(env="prod", namespace="vault-prod", service="vault", stable=90,
                           canary=10, canary_header=True)
    request = change(platform).authorization.request
    before = ActivityEnvironment().run(istio.set_routes, RouteWeights(
        env="prod", namespace="vault-prod", service="vault"))  # 100% stable, unchecked
    with pytest.raises(ApplicationError, match=f"0 of 1 valid approvals of {other}"):
        run_as(*RUN, istio.set_routes, weights.model_copy(update={"authorization": Authorization(
            request=request, approvals=[approval("alice", platform)])}))  # of another image
    now = run_as(*RUN, istio.set_routes, weights.model_copy(update={"authorization": Authorization(
        request=request, approvals=[approval("alice", platform, image=other)])}))
    assert (now.stable, now.canary) == (before.stable, before.canary) == (100, 0)  # unchanged till then


def test_a_system_identity_may_request_what_a_person_approved(platform: Platform) -> None:
    """The alert receiver's signed rollback (a kepler-system identity) with alice's
    approval applies; its request was refused as unsigned before."""
    from kepler.identity import SYSTEM
    from kepler.models import RollbackRequest
    from starter.signing import sign_request

    request = sign_request(platform, RollbackRequest(service="vault", env="prod",
                                                     requested_by="alerts"),
                           signing_key(platform, "alerts"), SYSTEM).signed
    other = IMAGE.replace("a" * 64, "d" * 64)
    result = run_as(*RUN, DeploymentActivities(platform).apply_release,
                    change(platform).model_copy(update={"image": other, "authorization": Authorization(
                        request=request, approvals=[approval("alice", platform, image=other)])}))
    assert result.changed and image_now(platform) == other
