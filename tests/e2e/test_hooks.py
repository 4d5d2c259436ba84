"""End to end, as a user: release hooks through the CLI, the real dev server and worker,
and the sandbox (whose Jobs fail a hook when the commit's kepler-sandbox.yaml says so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.serve import Sandbox
from tests.e2e.test_jobs import batch, job_done, jobs
from tests.e2e.test_release import apps, core, gitlab_client, kepler

pytestmark = pytest.mark.e2e

MIGRATE = {"pre_deploy": {"command": ["alembic", "upgrade", "head"], "timeout": 60,
                          "undo": {"command": ["alembic", "downgrade", "-1"]}},
           "post_deploy": {"command": ["./smoke-test"]}}


def hook_jobs(sandbox: Sandbox, ns: str, kind: str) -> list[Any]:
    return [j for n, j in sorted(jobs(sandbox, ns).items()) if f"-{kind}-" in n]


async def test_a_failed_migration_is_undone_and_the_old_version_keeps_running(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    spec = {"name": "migrator", "team": "payments", "replicas": 1,
            "config_files": {"db.conf": "schema=v1\n"}, "hooks": MIGRATE}
    path = tmp_path / "spec.yaml"

    # bad hooks are refused before anything happens, naming the field
    for bad, field in (({"pre_deploy": {"timeout": 60}}, "hooks.pre_deploy.command"),
                       ({"post_deploy": {"command": ["x"], "timeout": 5}}, "hooks.post_deploy.timeout"),
                       ({"pre_deploy": {"command": ["x"], "undo": {"command": ["y"], "timeout": 99999}}},
                        "hooks.pre_deploy.undo.timeout")):
        path.write_text(yaml.safe_dump({**spec, "hooks": bad}))
        code, out, err = await kepler(platform_file, "service", "create", "-f", str(path))
        assert code == 2 and field in err, (code, out, err)
    assert not gitlab_client(sandbox).projects.list(search="migrator")

    path.write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(path), "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(platform_file, "release", "migrator", "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    v1 = json.loads(out)["report"]["image"]
    ns = "migrator-staging"
    (pre,), (post,) = hook_jobs(sandbox, ns, "pre-deploy"), hook_jobs(sandbox, ns, "post-deploy")
    assert job_done(pre) == "Complete" and job_done(post) == "Complete"
    container = pre.spec.template.spec.containers[0]
    assert container.image == v1 and container.command == ["alembic", "upgrade", "head"]
    assert pre.metadata.labels["kepler.dev/hook"] == "pre_deploy"
    assert "app" not in pre.spec.template.metadata.labels  # no Service sends it traffic
    assert pre.metadata.owner_references[0].name == "migrator"  # goes with the Deployment
    hook_config = core(sandbox).read_namespaced_config_map(pre.metadata.name, ns)
    assert hook_config.data == {"db.conf": "schema=v1\n"}

    # v2's migration fails: the old version keeps running and the undo runs
    project = gitlab_client(sandbox).projects.get("demo/migrator")
    project.commits.create({"branch": "main", "commit_message": "v2: a bad migration", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml",
         "content": "hooks: {pre_deploy: fail}\n"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**spec, "config_files": {"db.conf": "schema=v2\n"}})}]})
    code, out, err = await kepler(platform_file, "release", "migrator", "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 1, out + err
    assert "pre_deploy hook failed" in err and "undone: pre_deploy undo" in err, err
    status = json.loads((await kepler(platform_file, "status", "migrator", "--env", "staging",
                                      "-o", "json"))[1])
    assert status["outcome"] == "rolled_back"
    deploy = apps(sandbox).read_namespaced_deployment("migrator", ns)
    assert deploy.spec.template.spec.containers[0].image == v1
    assert core(sandbox).read_namespaced_config_map("migrator-config", ns).data == {
        "db.conf": "schema=v1\n"}
    failed = [j for j in hook_jobs(sandbox, ns, "pre-deploy") if job_done(j) == "Failed"]
    (undo,) = hook_jobs(sandbox, ns, "undo")
    assert len(failed) == 1 and job_done(undo) == "Complete"
    assert undo.spec.template.spec.containers[0].command == ["alembic", "downgrade", "-1"]
    assert undo.spec.template.spec.containers[0].image != v1  # v2's image: its down-migration
    assert batch(sandbox).read_namespaced_job(failed[0].metadata.name, ns)  # kept, with its log
