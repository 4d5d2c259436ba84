"""`kepler audit` as a platform team would read it: who asked, who approved which digest
and commit, through which channel — from Temporal history, every signature verified
again against the allowed signers the platform lists now."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.serve import Sandbox
from tests.e2e.test_release import kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e


async def test_audit_shows_verified_requesters_approvers_and_digests(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "ledger7", "team": "t", "replicas": 1}))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    assert (await kepler(platform_file, "release", "ledger7", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0  # prod takes only what staging runs
    assert (await kepler(platform_file, "release", "ledger7", "--env", "prod", "--ref", "main"))[0] == 0
    await wait_for_stage(platform_file, "ledger7", "prod", "awaiting approval")
    code, out, err = await kepler(platform_file, "approve", "ledger7", "--env", "prod", "--comment",
                                  "LGTM", user="alice")
    assert code == 0, out + err
    status = await wait_for_outcome(platform_file, "ledger7", "prod")
    assert status["outcome"] == "succeeded"

    code, out, err = await kepler(platform_file, "audit", "ledger7", "--env", "prod", "-o", "json")
    assert code == 0, out + err
    (release,) = json.loads(out)
    assert release["operation"] == "release" and release["outcome"] == "succeeded"
    assert (release["request"]["who"], release["request"]["verified"], release["request"]["channel"]) == (
        "carol", True, "cli")
    (decision,) = release["decisions"]
    assert (decision["action"], decision["who"], decision["verified"], decision["comment"]) == (
        "approve", "alice", True, "LGTM")
    assert len(release["digests"]) == 1 and "@sha256:" in release["digests"][0]
    assert len(release["commits"]) == 1 and len(release["commits"][0]) == 40
    code, out, _ = await kepler(platform_file, "audit", "ledger7")
    assert code == 0 and "alice" in out and "✓" in out

    # alice's key is removed from the allowed signers: her approval no longer verifies
    home = Path(os.environ["KEPLER_HOME"])
    lines = [line for line in (home / "allowed_signers").read_text().splitlines()
             if not line.startswith("alice ")]
    (tmp_path / "signers").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load(platform_file.read_text())
    config["identity"] = {**config.get("identity", {}), "allowed_signers": str(tmp_path / "signers")}
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    code, out, err = await kepler(tmp_path / "kepler.yaml", "audit", "ledger7", "--env", "prod", "-o", "json")
    assert code == 0, out + err
    (decision,) = json.loads(out)[0]["decisions"]
    assert not decision["verified"] and "is not listed for kepler" in decision["problem"]
