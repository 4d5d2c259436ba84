"""Scheduled releases through the CLI on the real dev server, worker and sandbox.

The time-skipping test server does not implement schedules (CreateSchedule is
"unimplemented"), so this runs on the dev server: a nightly schedule is created,
listed (next fire at 02:00 UTC, overlap policy SKIP) and fired on demand; a schedule
with a seconds field fires by itself within seconds; then both are deleted."""

from __future__ import annotations

import asyncio
import json
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import ScheduleOverlapPolicy

from kepler.schedules import ScheduledReleaseReport
from sandbox.serve import Sandbox
from tests.helpers import keep_history
from tests.e2e.test_release import apps, kepler

pytestmark = pytest.mark.e2e


async def eventually(check: Any, what: str, timeout: float = 150) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"never: {what}")


async def test_nightly_schedule_is_listed_fires_and_is_deleted(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env, tmp_path: Path) -> None:
    spec = {"name": "sched", "team": "ops", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch")
    assert code == 0, out + err

    code, out, err = await kepler(platform_file, "schedule", "release", "sched", "--env", "staging",
                                  "--ref", "main", "--cron", "0 2 * * *")
    assert code == 0 and "release-sched@staging" in out, out + err
    code, out, err = await kepler(platform_file, "schedule", "release", "sched", "--env", "staging",
                                  "--ref", "main", "--cron", "0 3 * * *")
    assert code == 3 and "already exists" in err
    code, out, err = await kepler(platform_file, "schedule", "release", "sched", "--env", "staging",
                                  "--ref", "main", "--cron", "nightly")
    assert code == 2 and "--cron" in err

    rows = json.loads((await kepler(platform_file, "schedule", "list", "-o", "json"))[1])
    row = next(r for r in rows if r["id"] == "release-sched@staging")
    assert (row["service"], row["env"], row["ref"], row["cron"], row["requested_by"]) == (
        "sched", "staging", "main", "0 2 * * *", "carol")
    desc = await dev_env.client.get_schedule_handle("release-sched@staging").describe()
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    nxt = desc.info.next_action_times[0].astimezone(timezone.utc)
    assert (nxt.hour, nxt.minute) == (2, 0)

    # fire it now: a ScheduledRelease starts ReleaseVersion under sched@staging
    code, out, err = await kepler(platform_file, "schedule", "trigger", "sched", "--env", "staging")
    assert code == 0, err

    async def released() -> dict | None:
        code, out, _ = await kepler(platform_file, "status", "sched", "--env", "staging", "-o", "json")
        status = json.loads(out) if out.strip() else {}
        return status if status.get("outcome") == "succeeded" else None

    status = await eventually(released, "the triggered release succeeded")
    assert status["operation"] == "release" and status["requested_by"] == "carol"
    deploy = apps(sandbox).read_namespaced_deployment("sched", "sched-staging")
    assert "@sha256:" in deploy.spec.template.spec.containers[0].image
    assert deploy.status.available_replicas == 1
    desc = await dev_env.client.get_schedule_handle("release-sched@staging").describe()
    fired = desc.info.recent_actions[-1].action.workflow_id
    assert fired.startswith("scheduled-sched@staging")
    report = await dev_env.client.get_workflow_handle(fired, result_type=ScheduledReleaseReport).result()
    assert report.outcome == "succeeded" and report.release_id == "sched@staging"
    await keep_history(dev_env.client, "scheduled-release", fired)

    code, out, err = await kepler(platform_file, "schedule", "delete", "sched", "--env", "staging")
    assert code == 0, err
    rows = json.loads((await kepler(platform_file, "schedule", "list", "-o", "json"))[1])
    assert not [r for r in rows if r["id"] == "release-sched@staging"]
    code, out, err = await kepler(platform_file, "schedule", "delete", "sched", "--env", "staging")
    assert code == 3 and "no such schedule" in err


async def test_a_schedule_fires_by_itself(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env, tmp_path: Path) -> None:
    """A cron with a seconds field (7 fields: second minute hour day month weekday year)
    fires every 2 s with no trigger, and the fire releases the service."""
    spec = {"name": "often", "team": "ops", "replicas": 3}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    code, out, err = await kepler(platform_file, "schedule", "release", "often", "--env", "staging",
                                  "--ref", "main", "--cron", "*/2 * * * * * *")
    assert code == 0, out + err
    handle = dev_env.client.get_schedule_handle("release-often@staging")

    async def fired_and_done() -> Any:
        desc = await handle.describe()
        if not desc.info.recent_actions:
            return None
        first = desc.info.recent_actions[0].action.workflow_id
        report = await dev_env.client.get_workflow_handle(
            first, result_type=ScheduledReleaseReport).result()
        return report

    report = await eventually(fired_and_done, "a fire", timeout=150)
    assert report.outcome == "succeeded" and report.release_id == "often@staging"
    assert apps(sandbox).read_namespaced_deployment("often", "often-staging").status.available_replicas == 3

    async def fired_again() -> Any:  # the same signed request: signed for the schedule
        desc = await handle.describe()
        if len(desc.info.recent_actions) < 2:
            return None
        second = desc.info.recent_actions[1].action.workflow_id
        return await dev_env.client.get_workflow_handle(
            second, result_type=ScheduledReleaseReport).result()

    report = await eventually(fired_again, "a second fire", timeout=150)
    assert report.outcome == "succeeded", report
    await handle.delete()
