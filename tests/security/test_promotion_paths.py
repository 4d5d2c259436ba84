"""Issue 26, item 10: with `promotion: {prod: {from: staging}}`, prod takes only what staging
ran, live and healthy for the soak — wherever the change enters. Here the apply-time
check: `kubernetes.apply_release` against the sandbox's Kubernetes, run as a given
workflow run (ActivityEnvironment), with the platform's own policy: it reads staging's
release history itself and writes nothing into prod that staging did not run, whatever
approvals the run carries — unless two of them are break-glass approvals of that image."""

from __future__ import annotations

import json

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
from kepler.payloads import (
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
    old = ReleaseRecord(image=back, commit=COMMIT, at=datetime.now(timezone.utc) - timedelta(days=1),
                        release_id="orbit@prod/old")  # live in prod once (written as a run would have)
    t = target("prod")
    k8s.clusters("prod").patch("Deployment", t.namespace, t.name(), {"metadata": {"annotations": {
        naming.HISTORY: json.dumps([old.model_dump(mode="json", exclude_none=True)])}}})
    request = signed(ReleaseRequest(service="orbit", env="prod", ref="main",
                                    requested_by="carol")).signed
    assert run_as(*RUN, k8s.apply_release, change(back, "prod", Authorization(
        gate="history", request=request))).changed
    assert image_in_prod(platform) == back


# --- the workflows: whoever starts them raw, on the time-skipping server with the fake world --

from kepler.models import CanaryRequest, OperationStatus  # noqa: E402
from kepler.promotion import LiveRelease, PromotionPath  # noqa: E402
from kepler.train import TrainMember, TrainReport, TrainRequest  # noqa: E402
from temporalio.client import WorkflowFailureError  # noqa: E402
from tests.security.test_raw_starts import world  # noqa: E402, F401
from tests.fakes.world import sha_of  # noqa: E402
from tests.helpers import decide, keep_history  # noqa: E402
from tests.workflows import test_canary  # noqa: E402
from tests.workflows.test_release import Harness, failure_of, harness  # noqa: E402, F401

STAGING_RUNS = "reg/demo/shop@sha256:" + "5" * 64
CHANGES = {"build", "apply_release", "apply_objects", "set_routes", "scale", "hook"}


def staging_runs_v1(world: Any) -> None:
    """prod is promoted from staging, which runs v1 (live, healthy, soaked)."""
    world.promotion = PromotionPath(source="staging", soak=timedelta(hours=1))
    world.live = LiveRelease(exists=True, healthy=True, image=STAGING_RUNS, commit=sha_of("v1"),
                             version="v1", since=datetime.now(timezone.utc) - timedelta(hours=2))
    world.images[sha_of("v1")] = STAGING_RUNS.rsplit("@", 1)[1]


def prod_release(ref: str, **fields: Any) -> ReleaseRequest:
    return ReleaseRequest(service="shop", env="prod", ref=ref, requested_by="carol", **fields)


def changes(world: Any) -> set[str]:
    return {c.split()[0] for c in world.calls} & CHANGES


async def test_a_raw_release_of_a_commit_staging_never_ran_is_refused_before_any_build(
        harness: Harness) -> None:  # noqa: F811
    staging_runs_v1(harness.world)
    started = await harness.start(prod_release("bad-v2"))
    message = await failure_of(started)
    assert "prod takes only what staging runs, live and healthy for 1:00:00" in message
    assert f"staging runs v1 ({sha_of('v1')[:12]}), not {sha_of('bad-v2')[:12]}" in message
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.refused and status.pending_approval is None  # exit 3; no approver asked
    assert changes(harness.world) == set() and "find_image" not in harness.world.calls


async def test_a_release_by_ref_of_what_staging_runs_takes_its_digest_without_a_build(
        harness: Harness) -> None:  # noqa: F811
    staging_runs_v1(harness.world)
    started = await harness.start(prod_release("v1"))
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval.digests == [STAGING_RUNS]
    assert await decide(harness.client, "shop", "prod", "alice") == "approved"
    report = await started.handle.result()
    assert (report.outcome, report.image) == ("succeeded", STAGING_RUNS)
    assert "build" not in harness.world.calls
    await keep_history(harness.client, "release-on-a-promotion-path", started.workflow_id)


async def test_off_the_path_only_through_a_break_glass_gate(harness: Harness) -> None:  # noqa: F811
    staging_runs_v1(harness.world)
    started = await harness.start(prod_release("bad-v2", break_glass=True, reason="hotfix 7"))
    status = await harness.wait_stage(started, "awaiting approval")
    assert (status.pending_approval.operation, status.pending_approval.min_approvals) == (
        "break-glass release", 2)
    assert "apply_release" not in harness.world.calls
    assert await decide(harness.client, "shop", "prod", "alice") == "approval recorded (1 of 2)"
    assert await decide(harness.client, "shop", "prod", "bob") == "approved"
    report = await started.handle.result()
    assert report.outcome == "succeeded" and harness.world.recorded[-1].record.break_glass == "hotfix 7"


async def test_a_train_member_staging_never_ran_stops_the_train_before_any_build(
        world: tuple[Any, Any, str]) -> None:  # noqa: F811
    client, fake, queue = world
    staging_runs_v1(fake)
    train = signed(TrainRequest(name="night", env="prod", requested_by="carol",
                                members=[TrainMember(service="shop", ref="bad-v2")]))
    handle = await client.start_workflow("ReleaseTrain", train, id="train-night@prod",
                                         task_queue=queue, result_type=TrainReport)
    with pytest.raises(WorkflowFailureError) as e:
        await handle.result()
    assert "prod takes only what staging runs" in str(e.value.cause)
    assert changes(fake) == set()
    await keep_history(client, "train-refused-off-the-promotion-path", "train-night@prod")


async def test_a_canary_of_a_commit_staging_never_ran_is_refused_before_any_build(time_env: Any) -> None:
    import uuid

    import workflows
    from temporalio.worker import Worker

    world = test_canary.CanaryWorld()
    staging_runs_v1(world)
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        canary = test_canary.Harness(time_env, world, queue)
        handle = await canary.start(env="prod", ref="bad-v2")
        message = await test_canary.failure_of(handle)
        await keep_history(time_env.client, "canary-refused-off-the-promotion-path", "shop@prod")
    assert "prod takes only what staging runs" in message
    assert changes(world) == set()


# --- the CLI, the real dev server and worker, and the sandbox ---------------------------------

@pytest.mark.e2e
async def test_kepler_release_into_prod_of_what_staging_never_ran_is_refused(
        sandbox: Sandbox, platform_file: Any, e2e_worker: Any, tmp_path: Any) -> None:
    """The issue's own case: `kepler release SVC --env prod --ref bad-v2`, a commit staging
    never ran, is refused with exit 3 before anything starts; a ref that names what staging
    runs but has moved since is refused by the workflow, before any build, approval or change."""
    import json

    import yaml

    from tests import world as the_world
    from tests.e2e.test_release import gitlab_client, kepler

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "pathy", "team": "t", "replicas": 1}))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    code, out, err = await kepler(platform_file, "release", "pathy", "--env", "staging", "--ref",
                                  "main", "--watch", "-o", "json")
    assert code == 0, out + err
    tested = json.loads(out)["report"]
    before = the_world.snapshot(sandbox, ["pathy-prod"])

    code, out, err = await kepler(platform_file, "release", "pathy", "--env", "prod", "--ref", "bad-v2")
    assert code == 3, out + err
    assert "prod takes only what staging runs" in err and "--from staging" in err
    code, out, err = await kepler(platform_file, "status", "pathy", "--env", "prod")
    assert code == 1 and "no operation found" in err  # nothing started

    gitlab_client(sandbox).projects.get("demo/pathy").commits.create({
        "branch": "main", "commit_message": "not in staging", "actions": [
            {"action": "create", "file_path": "later.txt", "content": "later\n"}]})
    code, out, err = await kepler(platform_file, "release", "pathy", "--env", "prod", "--ref",
                                  "main", "--watch")
    assert code == 3, out + err
    assert f"staging runs main ({tested['commit'][:12]}), not" in err
    status = json.loads((await kepler(platform_file, "status", "pathy", "--env", "prod", "-o",
                                      "json"))[1])
    assert status["refused"] and not any(s["name"] in ("build", "awaiting approval")
                                         for s in status["steps"])
    assert the_world.differences(before, the_world.snapshot(sandbox, ["pathy-prod"])) == []
