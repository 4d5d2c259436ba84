"""Automatic promotion (`promotion.prod: {from: staging, auto: true}`) on the time-skipping
server: a successful staging release offers itself; AutoPromotion waits the soak on a
durable timer, a newer staging release supersedes the waiting one, a source that no longer
runs the digest ends it `stale`, and otherwise prod's ReleaseVersion of exactly that digest
asks prod's approvers (the promotions identity is only the requester)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows
from activities.promotion import PromotionActivities
from kepler.clients import operations as ops
from kepler.models import ReleaseRequest
from kepler.contracts import PROMOTION_REPORT
from kepler.promotion import AutoPromotionReport, LiveRelease, PromotionPath
from kepler.settings import load_platform
from tests.fakes.world import FakeWorld
from tests.helpers import decide, keep_history
from tests.workers import wait_for
from workflows.promotion import BUSY_RETRY
from tests.workflows.test_release import Harness, release

SOAK = timedelta(hours=1)


@pytest.fixture
async def auto(time_env: Any) -> AsyncIterator[Harness]:
    world = FakeWorld()
    world.promotion = PromotionPath(source="staging", soak=SOAK, auto=True)
    queue = f"q-{uuid.uuid4()}"
    platform = load_platform()
    platform = platform.model_copy(update={
        "promotion": {"prod": world.promotion},
        "temporal": platform.temporal.model_copy(update={"task_queue": queue})})
    promotions = PromotionActivities(platform, time_env.client)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                          activities=[*world.activities(), promotions.offer, promotions.sign_request],
                          activity_executor=executor):
            yield Harness(time_env, world, queue)


async def release_staging(h: Harness, ref: str) -> Any:
    """A staging release; staging then runs it, live and healthy, as the world says. Time
    stands still meanwhile: a soak begun must not end while the test waits for a result."""
    with h.env.auto_time_skipping_disabled():
        report = await (await h.start(release("staging", ref))).handle.result()
    h.world.live = LiveRelease(exists=True, healthy=True, image=report.image, commit=report.commit,
                               version=ref, since=datetime.now(timezone.utc), replicas=2)
    return report


def promotion(h: Harness) -> WorkflowHandle[Any, AutoPromotionReport]:
    return h.client.get_workflow_handle("promote-shop@prod", result_type=AutoPromotionReport)


async def promotion_status(h: Harness) -> AutoPromotionReport:
    return await ops.query(promotion(h), PROMOTION_REPORT)


async def until(probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], Any], what: str) -> Any:
    """`probe()` once `ok` says so (a workflow not started yet counts as not yet)."""
    async def check() -> Any:
        try:
            value = await probe()
        except Exception:  # noqa: BLE001 - not started yet
            return None
        return value if ok(value) else None
    return await wait_for(check, timeout=90, what=what, interval=0.05)


def soaking(s: AutoPromotionReport) -> bool:
    return s.stage.startswith("soaking")


def prod_status(h: Harness) -> Callable[[], Awaitable[Any]]:
    return lambda: ops.status(h.client, "shop@prod")


def awaiting(s: Any) -> bool:
    return s.stage == "awaiting approval"


async def test_a_staging_release_is_promoted_after_the_soak_with_prods_approval(auto: Harness) -> None:
    tested = await release_staging(auto, "v1")
    waiting = await until(lambda: promotion_status(auto), soaking, "soaking")
    assert waiting.candidate.image == tested.image and waiting.soak_until is not None
    assert "apply_release" in auto.world.calls and auto.world.calls.count("apply_release") == 1

    await auto.env.sleep(SOAK)  # the durable timer: nothing polls in the meantime
    status = await until(prod_status(auto), awaiting, "prod awaiting approval")
    assert status.requested_by == "promotions" and status.requester_verified
    assert status.pending_approval.digests == [tested.image]
    assert status.pending_approval.commits == [tested.commit]
    assert await decide(auto.client, "shop", "prod", "alice") == "approved"
    report = await promotion(auto).result()
    assert report.outcome == "succeeded", report
    assert report.release.image == tested.image and auto.world.deployment["image"] == tested.image
    await keep_history(auto.client, "auto-promotion", "promote-shop@prod")


async def test_a_newer_staging_release_supersedes_the_one_soaking(auto: Harness) -> None:
    await release_staging(auto, "v1")
    await until(lambda: promotion_status(auto), soaking, "soaking")
    newer = await release_staging(auto, "v2")
    status = await until(lambda: promotion_status(auto),
                          lambda s: s.candidate and s.candidate.version == "v2", "v2 soaking")
    assert status.superseded == ["v1"] and status.stage.startswith("soaking")
    assert status.soak_until == status.candidate.since + SOAK  # counted from v2's release

    await auto.env.sleep(SOAK)
    prod = await until(prod_status(auto), awaiting, "prod awaiting approval")
    assert prod.pending_approval.digests == [newer.image]  # only v2 is ever proposed


async def test_a_source_that_no_longer_runs_the_digest_ends_it_stale(auto: Harness) -> None:
    await release_staging(auto, "v1")
    await until(lambda: promotion_status(auto), soaking, "soaking")
    auto.world.live = auto.world.live.model_copy(update={"image": "reg/demo/shop@sha256:" + "e" * 64})
    await auto.env.sleep(SOAK)
    report = await promotion(auto).result()
    assert report.outcome == "stale" and "no longer runs v1" in report.detail
    with pytest.raises(RPCError, match="not found"):  # prod was never asked
        await ops.status(auto.client, "shop@prod")


async def test_no_path_no_offer(auto: Harness) -> None:
    """A release to prod (no automatic path from it) offers nothing."""
    auto.world.promotion = PromotionPath(source="staging", soak=SOAK, auto=False)
    await release_staging(auto, "v1")
    assert not any(c.startswith("offer") for c in auto.world.calls)
    with pytest.raises(RPCError, match="not found"):
        await promotion_status(auto)


@pytest.mark.parametrize("fields,rule", [
    ({"ref": "v1"}, "signs only a promotion of one digest"),
    ({"from_env": "qa"}, "no automatic path from qa"),
    ({"break_glass": True}, "signs only a promotion of one digest"),
    ({"env": "staging", "from_env": "prod"}, "promotion.staging: no automatic path"),
])
def test_the_promotions_key_signs_nothing_but_an_automatic_promotion(fields: dict, rule: str) -> None:
    platform = load_platform().model_copy(update={
        "promotion": {"prod": PromotionPath(source="staging", auto=True)}})
    base = {"service": "shop", "env": "prod", "from_env": "staging", "requested_by": "promotions",
            "image": "reg/demo/shop@sha256:" + "1" * 64, "commit": "c" * 40}
    req = ReleaseRequest.model_construct(**{**base, **fields})  # as a raw start could send it
    with pytest.raises(ApplicationError, match=rule):
        PromotionActivities(platform).sign_request(req)


async def test_prod_busy_is_tried_again_and_a_release_offered_meanwhile_goes_next(auto: Harness) -> None:
    """prod held by a manual release: the promotion waits on a timer, then goes; a staging
    release offered while prod's promotion runs is promoted in the next run."""
    await release_staging(auto, "v1")
    # v0 never ran in staging: only a break-glass may take it to prod (issue 26, item 10)
    manual = await auto.start(release("prod", "v0").model_copy(update={"break_glass": True}))
    await until(prod_status(auto), awaiting, "the manual prod release awaiting approval")
    await auto.env.sleep(SOAK)
    await until(lambda: promotion_status(auto), lambda s: s.stage.startswith("waiting for shop@prod"),
                "the promotion waiting for the lock")
    assert await decide(auto.client, "shop", "prod", "alice", "reject") == "rejected"
    with pytest.raises(WorkflowFailureError) as e, auto.env.auto_time_skipping_disabled():
        await manual.handle.result()
    assert "rejected" in str(e.value.cause), e.value.cause
    await auto.env.sleep(BUSY_RETRY)  # its next try, on the timer
    first = await until(prod_status(auto), lambda s: awaiting(s) and s.requested_by == "promotions",
                        "the promotion's prod release")
    newer = await release_staging(auto, "v2")
    assert first.pending_approval.digests != [newer.image]
    assert await decide(auto.client, "shop", "prod", "alice") == "approved"
    nxt = await until(lambda: promotion_status(auto),
                      lambda s: s.candidate and s.candidate.version == "v2", "v2 promoted next")
    assert nxt.outcome == "running" and not nxt.superseded  # v1 went out; v2 is next, not a swap


def test_the_promotions_key_signs_as_the_configured_identity() -> None:
    """Whoever the payload names, the signature is the promotions identity's."""
    platform = load_platform().model_copy(update={
        "promotion": {"prod": PromotionPath(source="staging", auto=True)}})
    req = ReleaseRequest(service="shop", env="prod", from_env="staging", requested_by="carol",
                         image="reg/demo/shop@sha256:" + "1" * 64, commit="c" * 40)
    signed = PromotionActivities(platform).sign_request(req)
    assert signed.requested_by == platform.auto_promotion.identity == "promotions"
    assert signed.signed is not None and signed.signed.statement.env == "prod"


async def test_a_stale_end_is_told_and_the_run_keeps_an_operations_status(auto: Harness) -> None:
    """AutoPromotion runs in the lifecycle: a stale or skipped end notifies, and its status
    is an operation's status (stage, outcome, steps), its report the promotion's."""
    from kepler.contracts import STATUS

    await release_staging(auto, "v1")
    await until(lambda: promotion_status(auto), soaking, "soaking")
    soaking_status = await ops.query(promotion(auto), STATUS)
    assert soaking_status.operation.value == "promotion" and soaking_status.outcome == "soaking"
    auto.world.live = auto.world.live.model_copy(update={"image": "reg/demo/shop@sha256:" + "e" * 64})
    await auto.env.sleep(SOAK)
    report = await promotion(auto).result()
    assert report.outcome == "stale"
    told = [n for n in auto.world.notes if n.event == "stale"]
    assert len(told) == 1 and "no longer runs v1" in told[0].text, auto.world.notes
    status = await ops.query(promotion(auto), STATUS)
    assert status.outcome == "stale" and status.stage == "done"
    assert "read staging's release" in [s.name for s in status.steps]
