"""`kepler upgrade-check` on the real dev server and worker: every open run on the task queue
is replayed against the code; exit 0 when all replay, 1 naming each run that would not
(docs/architecture.md, "Patches")."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio import workflow

import workflows
from kepler.models import ReleaseReport, ReleaseRequest
from kepler.contracts import RELEASE_VERSION
from sandbox.serve import Sandbox
from tests.e2e.test_release import kepler, wait_for_outcome, wait_for_stage
from worker import replay_open_runs, workflow_type

pytestmark = pytest.mark.e2e
QUEUE = "kepler-e2e"  # the platform file's (tests/conftest.py)


@workflow.defn(name=RELEASE_VERSION.workflow, sandboxed=False)
class ChangedReleaseVersion:
    """A release whose code changed without a patch: it waits before anything else."""

    @workflow.run
    async def run(self, req: ReleaseRequest) -> ReleaseReport:
        await workflow.sleep(timedelta(minutes=1))
        return ReleaseReport(service=req.service, env=req.env, outcome="succeeded")


async def test_upgrade_check_replays_open_runs_and_names_those_that_would_fail(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "upgr", "team": "t",
                                                        "replicas": 1}))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(platform_file, "release", "upgr", "--env", "staging", "--ref",
                                  "main", "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(platform_file, "release", "upgr", "--env", "prod", "--ref",
                                  "main", "--output", "json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    await wait_for_stage(platform_file, "upgr", "prod", "awaiting approval")  # an open run

    code, out, err = await kepler(platform_file, "upgrade-check", "--output", "json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["checked"] >= 1 and result["failing"] == [], result
    code, out, err = await kepler(platform_file, "upgrade-check")
    assert code == 0 and "all replay" in out, out + err

    # the same open run against a ReleaseVersion changed without a patch: it would fail
    changed = [ChangedReleaseVersion, *(w for w in workflows.ALL
                                        if workflow_type(w) != RELEASE_VERSION.workflow)]
    checked, failing = await replay_open_runs(dev_env.client, QUEUE, changed)
    assert checked >= 1
    ours = [f for f in failing if f.run_id == run_id]
    assert [(f.workflow_id, f.workflow_type) for f in ours] == [
        ("upgr@prod", RELEASE_VERSION.workflow)], failing
    assert "Nondeterminism" in ours[0].error, ours[0].error
    assert await replay_open_runs(dev_env.client, QUEUE) == (checked, [])  # today's code

    # a run of a type this code no longer has: the CLI names it and exits 1
    stray = await dev_env.client.start_workflow("RetiredOperation", id=f"stray-{uuid.uuid4()}",
                                                task_queue=QUEUE)
    try:
        code, out, err = await kepler(platform_file, "upgrade-check", "--output", "json")
        assert code == 1, out + err
        failing_now = json.loads(out)["failing"]
        assert [(f["workflow_id"], f["workflow_type"]) for f in failing_now] == [
            (stray.id, "RetiredOperation")], failing_now
        code, out, err = await kepler(platform_file, "upgrade-check")
        assert code == 1 and "1 would fail" in out and stray.id in out, out + err
    finally:
        await stray.terminate("test over")

    code, out, err = await kepler(platform_file, "reject", "upgr", "--env", "prod", user="alice")
    assert code == 0, out + err
    assert (await wait_for_outcome(platform_file, "upgr", "prod"))["outcome"] == "rejected"
