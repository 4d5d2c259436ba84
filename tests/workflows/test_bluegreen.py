"""Blue-green, every branch, on the time-skipping server with in-memory activities: a release
whose strategy is blue-green hands over to the Canary workflow, which brings the new version
up beside the live one, switches all traffic in one route write, keeps the old version warm
for the rollback window and switches back in one write when asked or when analysis fails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.client import WorkflowHandle

from kepler.clients import operations as ops
from kepler.models import CanaryRequest, OperationStatus, ReleaseRequest
from kepler.scale import REPLICAS
from kepler.spec import ServiceSpec
from workflows.base import StepFailed
from workflows.bluegreen import chosen
from tests.fakes.canary import HEALTHY
from tests.helpers import decide, keep_history, signed
from tests.workflows.test_canary import OLD, STABLE, Harness, assert_retreated, failure_of, harness  # noqa: F401

PREVIEW = (100, 0, True)  # live traffic on the old version; testers' header on the new
SWITCHED = (0, 100, True)


def blue_green(harness: Harness, **settings: Any) -> None:
    harness.world.spec = {"environments": {"staging": {"strategy": "blue-green"}},
                          "blue_green": {"interval": "1m", "rollback_window": "10m", **settings}}


async def release(harness: Harness, env: str = "staging", **fields: Any) -> WorkflowHandle:
    req = ReleaseRequest(service="shop", env=env, ref="v2", requested_by="carol", **fields)
    return (await ops.start(harness.client, signed(req, await harness.env.get_current_time()),
                            harness.queue)).handle


def in_phase(stage: str) -> Any:
    return lambda s: s.canary is not None and s.stage == stage


async def test_the_switch_the_window_then_the_old_version_scaled_down(harness: Harness) -> None:
    blue_green(harness, preview_analysis=2, post_analysis=1)
    handle = await release(harness)
    report = await handle.result()  # follows the hand-over to the Canary run
    w = harness.world
    assert report.outcome == "succeeded"
    assert w.route_log == [PREVIEW, SWITCHED, STABLE]  # preview, the switch, back to the primary
    assert w.analyses == 3  # 2 against the preview, 1 at 100 %
    assert w.deployment["image"] == report.image != OLD  # the primary took it after the window
    assert w.canary == {"exists": True, "image": report.image, "replicas": 0}
    assert w.calls.count("build") <= 1 and len(w.recorded) == 1  # recorded as any release
    desc = await harness.client.get_workflow_handle("shop@staging").describe()
    assert desc.workflow_type == "Canary"
    status = await harness.status(handle)
    assert status.canary.strategy == "blue-green" and status.canary.switched_at is not None
    assert any(n.event == "switched" and "stays warm for 0:10:00" in n.text for n in w.notes)
    await keep_history(harness.client, "blue-green-switch-and-window", "shop@staging")
    await keep_history(harness.client, "release-hands-over-to-blue-green", "shop@staging",
                       handle.first_execution_run_id)


async def test_the_spec_decides_and_the_request_can_say_rolling(harness: Harness) -> None:
    blue_green(harness)
    report = await (await release(harness, strategy="rolling")).result()
    assert report.outcome == "succeeded" and harness.world.route_log == []  # rolled in place
    assert not harness.world.canary["exists"]


async def test_a_failed_preview_analysis_never_takes_live_traffic(harness: Harness) -> None:
    blue_green(harness, preview_analysis=3, failure_limit=2)
    harness.world.values = lambda n: {**HEALTHY, "request-success-rate": 80.0}
    message = await failure_of(await release(harness))
    assert "analysis of the preview failed" in message and "never took live traffic" in message
    assert_retreated(harness.world)
    assert all(canary == 0 for _, canary, _ in harness.world.route_log)


async def test_a_failed_post_switch_analysis_switches_straight_back(harness: Harness) -> None:
    blue_green(harness, post_analysis=2)
    harness.world.values = lambda n: {**HEALTHY, "request-duration": 900.0}
    handle = await release(harness)
    message = await failure_of(handle)
    assert "analysis of 100% failed" in message and "switched back" in message
    assert harness.world.route_log == [PREVIEW, SWITCHED, STABLE]
    assert_retreated(harness.world)  # the primary never stopped running the old version
    assert (await harness.status(handle)).outcome == "rolled_back"


async def test_rollback_in_the_window_switches_back_in_one_route_write(harness: Harness) -> None:
    blue_green(harness)
    handle = await release(harness)
    await harness.until(handle, in_phase("rollback window"), "the rollback window")
    writes = len(harness.world.route_log)
    assert (await harness.control("abort")).startswith("switching back")  # kepler rollback
    message = await failure_of(handle)
    w = harness.world
    assert "switched back by dave" in message
    assert w.route_log[writes:] == [STABLE]  # one route write; no rollout, no build
    assert w.deployment["image"] == OLD and w.calls.count("apply_release") == 0
    assert_retreated(w)
    status = await harness.status(handle)
    assert status.outcome == "rolled_back" and "switched back by dave" in status.error


async def test_promote_in_the_window_ends_it_early(harness: Harness) -> None:
    blue_green(harness, rollback_window="20h")
    handle = await release(harness)
    await harness.until(handle, in_phase("rollback window"), "the rollback window")
    assert (await harness.control("promote")).startswith("promoting")
    assert (await handle.result()).outcome == "succeeded"
    assert harness.world.route_log[-1] == STABLE and harness.world.canary["replicas"] == 0


async def test_an_approval_at_the_switch(harness: Harness) -> None:
    blue_green(harness, approve_switch=True)
    harness.world.spec["environments"] = {"prod": {"strategy": "blue-green"}}
    handle = await release(harness, env="prod")
    await harness.until(handle, lambda s: s.pending_approval is not None, "prod's gate")
    await decide(harness.client, "shop", "prod", "alice")  # the release's own approval
    await harness.until(handle, lambda s: s.pending_approval is not None
                        and s.pending_approval.gate == 2, "the switch's gate")
    assert harness.world.route_log == [PREVIEW]  # nothing switched before the approval
    await decide(harness.client, "shop", "prod", "bob")
    assert (await handle.result()).outcome == "succeeded"
    assert harness.world.route_log == [PREVIEW, SWITCHED, STABLE]


async def test_an_approval_at_the_switch_needs_approvers(harness: Harness) -> None:
    blue_green(harness, approve_switch=True)
    message = await failure_of(await release(harness))
    assert "approve_switch needs approvers" in message
    assert harness.world.route_log == [] and not harness.world.canary["exists"]


async def test_kepler_scale_holds_for_the_new_version_as_for_a_release(harness: Harness) -> None:
    blue_green(harness)
    harness.world.deployment.update(replicas=5, annotations={REPLICAS: "5"})
    handle = await release(harness)
    await harness.until(handle, in_phase("rollback window"), "the rollback window")
    assert harness.world.canary["replicas"] == 5  # green comes up as big as blue runs
    assert (await harness.control("promote")).startswith("promoting")
    assert (await handle.result()).outcome == "succeeded"
    assert harness.world.deployment["replicas"] == 5  # and the primary stays scaled


@pytest.mark.parametrize("stage", ["analysing the preview", "analysing 100%", "rollback window"])
async def test_a_cancel_at_each_stage_puts_everything_back(harness: Harness, stage: str) -> None:
    blue_green(harness, preview_analysis=2, post_analysis=2)
    handle = await release(harness)
    await harness.until(handle, in_phase(stage), stage)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert_retreated(harness.world)
    assert (await harness.status(handle)).outcome == "cancelled"


async def test_a_canary_run_started_as_a_blue_green_on_its_own_is_refused(harness: Harness) -> None:
    blue_green(harness)
    now = await harness.env.get_current_time()
    rel = signed(ReleaseRequest(service="shop", env="staging", ref="v2", requested_by="carol"), now)
    req = CanaryRequest(service="shop", env="staging", ref="v2", requested_by="carol", release=rel)
    handle = (await ops.start(harness.client, req, harness.queue)).handle
    message = await failure_of(handle)
    assert "started by its release" in message
    assert harness.world.route_log == [] and not harness.world.canary["exists"]


async def test_blue_green_is_for_deployments_not_trains(harness: Harness) -> None:
    harness.world.spec = {"type": "cronjob", "schedule": {"cron": "0 * * * *"}}
    message = await failure_of(await release(harness, strategy="blue-green"))
    assert "strategy: blue-green is for type deployment" in message
    status: OperationStatus = await harness.status(
        harness.client.get_workflow_handle("shop@staging"))
    assert status.bad_input and harness.world.route_log == []


async def test_a_blue_green_does_not_pause(harness: Harness) -> None:
    blue_green(harness, preview_analysis=3)
    handle = await release(harness)
    await harness.until(handle, in_phase("analysing the preview"), "the preview analysis")
    with pytest.raises(ops.Refused, match="a blue-green release does not pause"):
        await harness.control("pause")
    await handle.cancel()


async def test_the_longest_it_can_take_must_fit_the_approvals_validity(harness: Harness) -> None:
    w = harness.world
    w.approval_valid_for = timedelta(hours=24)
    blue_green(harness, rollback_window="24h", interval="10m")
    w.spec["environments"] = {"prod": {"strategy": "blue-green"}}
    message = await failure_of(await release(harness, env="prod"))
    assert "longer than prod's approval.valid_for of 1 day" in message
    assert w.route_log == [] and not w.canary["exists"]
    blue_green(harness)  # the default window fits (a canary's 7-day max_duration is not asked)
    w.spec["environments"] = {"prod": {"strategy": "blue-green"}}
    handle = await release(harness, env="prod")
    await harness.until(handle, lambda s: s.pending_approval is not None, "prod's gate")
    await handle.cancel()


def test_a_promotion_a_pinned_image_or_a_train_member_releases_rolling() -> None:
    spec = ServiceSpec(name="shop", team="t", environments={"prod": {"strategy": "blue-green"}})
    base = {"service": "shop", "env": "prod", "requested_by": "carol"}
    pinned = {"ref": "v2", "commit": "a" * 40, "image": "reg/demo/shop@sha256:" + "b" * 64}
    assert chosen(ReleaseRequest(**base, ref="v2"), spec)
    for fields in ({"from_env": "staging"}, pinned, {**pinned, "train_approved": True}):
        assert not chosen(ReleaseRequest(**base, **fields), spec)
        with pytest.raises(StepFailed, match="releases rolling, exactly its digest"):
            chosen(ReleaseRequest(**base, **fields, strategy="blue-green"), spec)
