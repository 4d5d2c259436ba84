"""Promotion (`kepler release --env prod --from staging`), every branch, on the time-skipping
server: exactly the digest and commit live in the source, never a ref resolved again or a
build; refused before any change when the source is not healthy or not soaked."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from kepler.models import OperationStatus, ReleaseRequest
from kepler.promotion import LiveRelease, PromotionPath
from tests.helpers import decide
from tests.workflows.test_release import Harness, failure_of, harness  # noqa: F401

DIGEST = "reg/demo/shop@sha256:" + "5" * 64
COMMIT = "c" * 40


def promote(env: str = "prod", source: str = "staging") -> ReleaseRequest:
    return ReleaseRequest(service="shop", env=env, from_env=source, requested_by="carol")


def built(harness: Harness, image: str = DIGEST) -> None:  # noqa: F811
    """The registry's image of COMMIT (a promotion checks the live digest is it)."""
    harness.world.images[COMMIT] = image.rsplit("@", 1)[1]


def live(age: timedelta = timedelta(hours=2), **fields: object) -> LiveRelease:
    return LiveRelease(**{"exists": True, "healthy": True, "image": DIGEST, "commit": COMMIT,
                          "version": "v7", "since": datetime.now(timezone.utc) - age, **fields})


async def test_promotes_exactly_the_digest_and_commit_live_in_the_source(harness: Harness) -> None:  # noqa: F811
    world = harness.world
    world.live, world.promotion = live(), PromotionPath(source="staging", soak=timedelta(hours=1))
    built(harness)
    started = await harness.start(promote())
    status = await harness.wait_stage(started, "awaiting approval")
    assert status.pending_approval.digests == [DIGEST]  # prod's approval covers that digest
    assert status.pending_approval.commits == [COMMIT]
    assert await decide(harness.client, "shop", "prod", "alice") == "approved"
    report = await started.handle.result()
    assert (report.outcome, report.image, report.commit) == ("succeeded", DIGEST, COMMIT)
    assert world.deployment["image"] == DIGEST
    assert "live_release staging" in world.calls
    assert not {"resolve_ref", "build"} & set(world.calls)  # nothing resolved again, no build
    final = await started.handle.query("status", result_type=OperationStatus)
    assert final.version == f"v7@{COMMIT[:8]}"


@pytest.mark.parametrize("source,path,why", [
    (live(healthy=False, detail="reg/x is not fully rolled out and available"), None,
     "nothing to promote from staging: reg/x is not fully rolled out and available"),
    (live(age=timedelta(minutes=10)), PromotionPath(source="staging", soak=timedelta(hours=1)),
     "less than prod's soak of 1:00:00"),
])
async def test_refused_before_any_change_when_the_source_is_not_ready(
        harness: Harness, source: LiveRelease, path: PromotionPath | None, why: str) -> None:  # noqa: F811
    harness.world.live, harness.world.promotion = source, path
    started = await harness.start(promote())
    assert why in await failure_of(started)
    status = await started.handle.query("status", result_type=OperationStatus)
    assert status.refused and status.outcome == "failed"  # the CLI exits 3
    assert "apply_release" not in harness.world.calls and "build" not in harness.world.calls


async def test_a_source_off_the_promotion_path_is_bad_input(harness: Harness) -> None:  # noqa: F811
    harness.world.live = live()
    harness.world.promotion = PromotionPath(source="qa", soak=timedelta(0))
    started = await harness.start(promote())
    assert "prod is promoted from qa (promotion.prod.from), not from staging" in await failure_of(started)
    assert "live_release staging" not in harness.world.calls


def test_a_promotion_names_a_source_and_nothing_else() -> None:
    for fields, rule in (({"ref": "v1", "from_env": "staging"}, "one of the two"),
                         ({}, "one of the two"),
                         ({"from_env": "prod"}, "not its own"),
                         ({"from_env": "staging", "commit": COMMIT}, "pins the digest and commit together")):
        with pytest.raises(ValidationError, match=rule):
            ReleaseRequest(service="shop", env="prod", requested_by="carol", **fields)


def test_promotion_paths_are_checked_when_the_platform_is_read() -> None:
    from kepler.settings import ConfigError, parse_platform

    base = ("gitlab: {url: http://g}\njenkins: {url: http://j}\nregistry: {url: http://r, host: r}\n"
            "environments: {staging: {cluster: {server: http://k}}, prod: {cluster: {server: http://k}}}\n")
    ok = parse_platform(base + "promotion: {prod: {from: staging, soak: 1h}}\n")
    assert ok.promotion["prod"].source == "staging" and ok.promotion["prod"].soak == timedelta(hours=1)
    for bad, rule in (("{prod: {from: qa}}", "promotion.prod.from: unknown environment 'qa'"),
                      ("{qa: {from: staging}}", "promotion.qa: unknown environment 'qa'"),
                      ("{prod: {from: prod}}", "not promoted from itself"),
                      ("{prod: {from: staging, auto: true}}", "auto")):
        with pytest.raises(ConfigError, match=rule):
            parse_platform(base + f"promotion: {bad}\n")


async def test_a_live_digest_not_built_from_its_recorded_commit_is_refused(harness: Harness) -> None:  # noqa: F811
    """Staging's history annotation says commit C, but the registry's image of C is another
    digest (someone edited the annotation, or pinned a foreign build): nothing is promoted."""
    harness.world.live = live()
    built(harness, "reg/demo/shop@sha256:" + "9" * 64)
    started = await harness.start(promote())
    assert f"image: {DIGEST} is not the image built from commit {COMMIT[:12]}" in await failure_of(started)
    assert "apply_release" not in harness.world.calls
