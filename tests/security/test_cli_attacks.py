"""The attacks of issue 18 as a user would try them against `kepler dev up`: the CLI, the
real dev server and worker, and the sandbox. Each is refused (or made to wait for a real
approval), names the rule, and leaves prod as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.serve import Sandbox
from tests import world
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e


def image_in(sandbox: Sandbox, service: str, env: str) -> str:
    deploy = apps(sandbox).read_namespaced_deployment(service, f"{service}-{env}")
    return deploy.spec.template.spec.containers[0].image


async def test_as_and_typed_names_do_not_approve(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """`kepler approve --as alice` by mallory: with a real platform file (no sandbox keys)
    `--as` is refused before anything is sent (typed names are what the workflow refuses:
    tests/workflows/test_authorization.py)."""
    real = yaml.safe_load(platform_file.read_text())
    real["identity"] = {"allowed_signers": str(Path(os.environ["KEPLER_HOME"]) / "allowed_signers")}
    cfg = tmp_path / "kepler.yaml"
    cfg.write_text(yaml.safe_dump(real))
    code, out, err = await kepler(cfg, "approve", "shop", "--env", "prod", "--as", "alice",
                                  user="mallory")
    assert code == 2 and "--as: only the sandbox picks a key by name" in err


async def test_rollback_to_a_digest_never_live_in_prod_needs_approval(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    spec = {"name": "vault2", "team": "t", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    assert (await kepler(platform_file, "release", "vault2", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0  # prod takes only what staging runs
    code, out, err = await kepler(platform_file, "release", "vault2", "--env", "prod", "--ref",
                                  "main")
    assert code == 0, out + err
    await wait_for_stage(platform_file, "vault2", "prod", "awaiting approval")
    assert (await kepler(platform_file, "approve", "vault2", "--env", "prod", user="alice"))[0] == 0
    assert (await wait_for_outcome(platform_file, "vault2", "prod"))["outcome"] == "succeeded"
    live = image_in(sandbox, "vault2", "prod")
    # a build only staging ever ran
    gitlab_client(sandbox).projects.get("demo/vault2").commits.create({
        "branch": "main", "commit_message": "staging only", "actions": [
            {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "latency_ms: 5\n"}]})
    code, out, err = await kepler(platform_file, "release", "vault2", "--env", "staging", "--ref",
                                  "main", "--watch", "-o", "json")
    assert code == 0, out + err
    staging_only = json.loads(out)["report"]["image"]
    assert staging_only != live
    before = world.snapshot(sandbox, ["vault2-prod"])

    digest = staging_only.rsplit("@", 1)[1]
    code, out, err = await kepler(platform_file, "rollback", "vault2", "--env", "prod", "--to", digest)
    assert code == 0, out + err
    status = await wait_for_stage(platform_file, "vault2", "prod", "awaiting approval")
    assert status["pending_approval"]["digests"] == [staging_only]  # what the approver sees
    assert world.differences(before, world.snapshot(sandbox, ["vault2-prod"])) == []
    code, out, err = await kepler(platform_file, "reject", "vault2", "--env", "prod", user="bob")
    assert code == 0, out + err
    assert (await wait_for_outcome(platform_file, "vault2", "prod"))["outcome"] == "rejected"
    assert image_in(sandbox, "vault2", "prod") == live
    assert world.differences(before, world.snapshot(sandbox, ["vault2-prod"])) == []


async def test_create_over_another_teams_service_is_refused(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """dave runs `service create` with the name of the payments team's service: exit 3
    naming its owners; its repository, routes and objects are as they were."""
    theirs = {"name": "ledger9", "team": "payments", "owners": ["bob"], "replicas": 1}
    (tmp_path / "theirs.yaml").write_text(yaml.safe_dump(theirs))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "theirs.yaml"),
                                  "--watch", user="bob")
    assert code == 0, out + err
    project = gitlab_client(sandbox).projects.get("demo/ledger9")
    spec_before = project.files.get(".kepler/service.yaml", ref="main").decode()
    before = world.snapshot(sandbox, ["ledger9-staging", "ledger9-prod"])
    mine = {"name": "ledger9", "team": "growth", "owners": ["dave"], "exposure": "external",
            "host": "ledger.example.com"}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "mine.yaml"),
                                  "--watch", user="dave")
    assert code == 3, out + err
    assert "demo/ledger9 exists and is owned by bob" in err and "platform admin (alice)" in err
    assert project.files.get(".kepler/service.yaml", ref="main").decode() == spec_before
    assert world.differences(before, world.snapshot(sandbox, ["ledger9-staging", "ledger9-prod"])) == []
