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
