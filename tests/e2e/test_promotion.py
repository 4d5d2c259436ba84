"""End to end: `kepler release SERVICE --env prod --from staging` through the CLI, the dev
server, the real worker and the sandbox — prod gets exactly the digest and commit live in
staging, behind prod's approval of that digest; with nothing healthy in staging it is
refused (exit 3) and prod is unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.serve import Sandbox
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome, wait_for_stage
from tests.workers import worker_with

pytestmark = pytest.mark.e2e


def image_in(sandbox: Sandbox, service: str, env: str) -> str:
    d = apps(sandbox).read_namespaced_deployment(service, f"{service}-{env}")
    return d.spec.template.spec.containers[0].image


async def test_promote_staging_to_prod_exactly(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "comet", "team": "t", "replicas": 1}))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err

    # nothing released to staging yet: refused, nothing changes in prod
    prod_before = image_in(sandbox, "comet", "prod")
    code, out, err = await kepler(platform_file, "release", "comet", "--env", "prod",
                                  "--from", "staging", "--watch")
    assert code == 3 and "nothing to promote from staging" in err, out + err
    assert image_in(sandbox, "comet", "prod") == prod_before

    code, out, err = await kepler(platform_file, "release", "comet", "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    tested = json.loads(out)["report"]
    # main moves on after staging was tested: the promotion must not pick it up
    gitlab_client(sandbox).projects.get("demo/comet").commits.create({
        "branch": "main", "commit_message": "untested", "actions": [
            {"action": "create", "file_path": "untested.txt", "content": "x\n"}]})

    code, out, err = await kepler(platform_file, "release", "comet", "--env", "prod",
                                  "--from", "staging")
    assert code == 0, out + err
    status = await wait_for_stage(platform_file, "comet", "prod", "awaiting approval")
    assert status["pending_approval"]["digests"] == [tested["image"]]
    assert status["pending_approval"]["commits"] == [tested["commit"]]
    code, out, err = await kepler(platform_file, "approve", "comet", "--env", "prod", user="alice")
    assert code == 0, out + err
    final = await wait_for_outcome(platform_file, "comet", "prod")
    assert final["outcome"] == "succeeded", final
    assert image_in(sandbox, "comet", "prod") == tested["image"]
    assert not any(s["name"] == "build" and s["outcome"] == "done" for s in final["steps"])

    code, out, err = await kepler(platform_file, "release", "comet", "--env", "prod",
                                  "--from", "nowhere")
    assert code == 2 and "--from: unknown environment 'nowhere'" in err, out + err


def automatic(config: dict[str, Any]) -> None:
    config["promotion"] = {"prod": {"from": "staging", "soak": "3s", "auto": True}}


async def test_a_staging_release_promotes_itself_after_the_soak(
        sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> None:
    """`promotion.prod.auto`: the staging release alone starts prod's release of exactly its
    digest after the soak (a durable timer); prod's approver still decides; `kepler status
    SERVICE` shows where it stands on the path."""
    async with worker_with(sandbox, dev_env, tmp_path, "kepler-e2e-auto", automatic) as cfg:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "nova", "team": "t", "replicas": 1}))
        code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch")
        assert code == 0, out + err
        code, out, err = await kepler(cfg, "release", "nova", "--env", "staging", "--ref", "main",
                                      "--watch", "-o", "json")
        assert code == 0, out + err
        tested = json.loads(out)["report"]

        status = await wait_for_stage(cfg, "nova", "prod", "awaiting approval")
        assert status["requested_by"] == "promotions" and status["requester_verified"]
        assert status["pending_approval"]["digests"] == [tested["image"]]
        code, out, err = await kepler(cfg, "status", "nova", "-o", "json")
        assert code == 0, out + err
        path = {row["env"]: row for row in json.loads(out)["path"]}
        assert list(path) == ["staging", "prod"]
        assert path["staging"]["live"]["healthy"] and path["staging"]["live"]["image"] == tested["image"]
        assert path["prod"]["from"] == "staging" and path["prod"]["auto"]
        assert path["prod"]["auto_promotion"]["stage"] == "releasing to prod"

        code, out, err = await kepler(cfg, "approve", "nova", "--env", "prod", user="alice")
        assert code == 0, out + err
        final = await wait_for_outcome(cfg, "nova", "prod")
        assert final["outcome"] == "succeeded", final
        assert image_in(sandbox, "nova", "prod") == tested["image"]
        code, out, err = await kepler(cfg, "status", "nova")  # the table people read
        assert code == 0 and "staging → prod" in out and "healthy" in out, out + err
        rows = {row["env"]: row for row in json.loads((await kepler(cfg, "status", "nova", "-o", "json"))[1])["path"]}
        assert rows["prod"]["live"]["healthy"] and rows["prod"]["live"]["since"]
        assert rows["prod"]["auto_promotion"]["outcome"] == "succeeded"
