"""End to end through the CLI, the dev server, the real worker and the sandbox: `kepler
freeze` stops releases at once (exit 3 naming the freeze and its end, nothing changes),
`kepler freeze list` shows it, only the one who froze it or an approver may `kepler
unfreeze`, and then the release goes through; a break-glass release into a frozen prod
goes through with two approvers other than the requester, marked in the release history
and in `kepler audit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import WorkflowExecutionStatus

from sandbox.serve import Sandbox
from tests.e2e.test_promotion import image_in
from tests.e2e.test_release import apps, kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e


async def _lift_all(dev_env: Any) -> None:
    """Other tests share this server: no freeze outlives this one, whatever happened."""
    for env in ("staging", "prod"):
        handle = dev_env.client.get_workflow_handle(f"freeze@{env}")
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")
        except Exception:  # noqa: BLE001 - none ran
            pass


async def test_freeze_refuses_lists_unfreezes_and_break_glass(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "glacier", "team": "t", "replicas": 1}))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    try:
        await _freeze_and_unfreeze(sandbox, platform_file)
        await _break_glass(sandbox, platform_file)
    finally:
        await _lift_all(dev_env)


async def _freeze_and_unfreeze(sandbox: Sandbox, platform_file: Path) -> None:
    code, out, err = await kepler(platform_file, "freeze", "--env", "staging", "--for", "2h",
                                  "--reason", "incident 42", "-o", "json")
    assert code == 0, out + err
    frozen = json.loads(out)["freeze"]
    assert (frozen["name"], frozen["by"], frozen["reason"]) == ("freeze@staging", "carol", "incident 42")
    until = frozen["until"][:19].replace("T", " ")

    before = image_in(sandbox, "glacier", "staging")
    code, out, err = await kepler(platform_file, "release", "glacier", "--env", "staging",
                                  "--ref", "main", user="dave")
    assert code == 3, out + err
    assert "staging is frozen by freeze@staging (by carol): incident 42" in err
    assert f"it ends at {until} UTC" in err
    assert image_in(sandbox, "glacier", "staging") == before
    code, out, err = await kepler(platform_file, "freeze", "--env", "staging", "--for", "1h",
                                  "--reason", "again", user="dave")
    assert code == 3 and "freeze@staging is busy: freeze" in err, out + err

    code, out, err = await kepler(platform_file, "freeze", "list", "-o", "json")
    assert code == 0, out + err
    listed = [f for f in json.loads(out) if f["env"] == "staging"]
    assert [(f["kind"], f["by"], f["active"]) for f in listed] == [("ad-hoc", "carol", True)]

    code, out, err = await kepler(platform_file, "unfreeze", "--env", "staging", user="dave")
    assert code == 3 and "dave may not unfreeze staging" in err, out + err
    code, out, err = await kepler(platform_file, "unfreeze", "--env", "staging")  # carol froze it
    assert code == 0 and "staging unfrozen by carol" in out, out + err
    code, out, err = await kepler(platform_file, "unfreeze", "--env", "staging")
    assert code == 3 and "no ad-hoc freeze is running on staging" in err, out + err

    code, out, err = await kepler(platform_file, "release", "glacier", "--env", "staging",
                                  "--ref", "main", "--watch", user="dave")
    assert code == 0, out + err
    assert image_in(sandbox, "glacier", "staging") != before


async def _break_glass(sandbox: Sandbox, platform_file: Path) -> None:
    code, out, err = await kepler(platform_file, "freeze", "--env", "prod", "--for", "1h",
                                  "--reason", "incident 43", user="alice")
    assert code == 0, out + err
    code, out, err = await kepler(platform_file, "release", "glacier", "--env", "prod",
                                  "--ref", "main", "--break-glass", "--reason", "hotfix for 43")
    assert code == 0, out + err  # not refused up front: it asks for the break-glass approval
    status = await wait_for_stage(platform_file, "glacier", "prod", "awaiting approval")
    assert status["pending_approval"]["operation"] == "break-glass release"
    assert status["pending_approval"]["min_approvals"] == 2
    code, out, err = await kepler(platform_file, "approve", "glacier", "--env", "prod")
    assert code == 3 and "four eyes" in err, out + err  # carol asked
    for who in ("alice", "bob"):
        code, out, err = await kepler(platform_file, "approve", "glacier", "--env", "prod", user=who)
        assert code == 0, out + err
    final = await wait_for_outcome(platform_file, "glacier", "prod")
    assert final["outcome"] == "succeeded", final
    deploy = apps(sandbox).read_namespaced_deployment("glacier", "glacier-prod")
    history = json.loads(deploy.metadata.annotations["kepler.dev/history"])
    assert history[0]["break_glass"] == "hotfix for 43"
    code, out, err = await kepler(platform_file, "audit", "glacier", "--env", "prod", "-o", "json")
    assert code == 0, out + err
    rows = json.loads(out)
    assert rows[0]["break_glass"] == "hotfix for 43" and rows[0]["request"]["verified"]
    assert sorted(d["who"] for d in rows[0]["decisions"]) == ["alice", "bob"]
