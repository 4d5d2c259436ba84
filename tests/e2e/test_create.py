"""`kepler service create` as a user runs it, on the real dev server, a real worker and the
sandbox, when it cannot finish: staging's API server refuses Kepler (403, as without RBAC),
so everything before is undone — what it created is deleted, and what it adopted (a
Service a platform admin's --adopt took over, a GitLab project's files, a Jenkins job) is
put back exactly; their namespace is used, never changed. A create that goes through adopts the job and leaves no backup behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator

import jenkins
import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from tests import world
from tests.e2e.test_release import core, gitlab_client, kepler
from tests.helpers import keep_history
from tests.receivers import ForbiddingApiServer
from tests.workers import worker_with

pytestmark = pytest.mark.e2e

THEIR_JOB = """<?xml version='1.1' encoding='UTF-8'?>
<project>
  <description>the payments team's own nightly job &amp; notes</description>
  <keepDependencies>false</keepDependencies>
  <disabled>false</disabled>
  <concurrentBuild>true</concurrentBuild>
  <builders><hudson.tasks.Shell><command>make nightly</command></hudson.tasks.Shell></builders>
</project>"""


@pytest.fixture
async def staging_refuses(sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> AsyncIterator[Path]:
    forbidding = ForbiddingApiServer()

    def change(config: dict[str, Any]) -> None:
        config["environments"]["staging"]["cluster"]["server"] = forbidding.url

    try:
        async with worker_with(sandbox, dev_env, tmp_path, "kepler-e2e-create", change) as path:
            yield path
    finally:
        forbidding.close()


def jenkins_of(sandbox: Sandbox) -> jenkins.Jenkins:
    s = sandbox.settings
    return jenkins.Jenkins(sandbox.urls["jenkins"], username=s.jenkins_user, password=s.jenkins_token)


async def test_a_failed_create_undoes_everything_and_gives_an_adopted_job_back(
        sandbox: Sandbox, staging_refuses: Path, platform_file: Path, e2e_worker: Any, dev_env: Any,
        tmp_path: Path) -> None:
    server = jenkins_of(sandbox)
    server.create_job("kepler-adopt", THEIR_JOB)
    theirs = server.get_job_config("kepler-adopt")
    # prod's namespace and a Service were there before, someone else's (environments are
    # laid down in name order: prod, then staging, which refuses)
    core(sandbox).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
        name="adopt-prod", labels={"team": "payments"})))
    core(sandbox).create_namespaced_service("adopt-prod", k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="adopt", labels={"owner": "payments"}),
        spec=k8s.V1ServiceSpec(selector={"app": "legacy"}, ports=[k8s.V1ServicePort(port=9000)])))
    # and their GitLab project, with a Dockerfile of their own and no Kepler spec yet
    gl = gitlab_client(sandbox)
    project = gl.projects.create({"name": "adopt", "path": "adopt",
                                  "namespace_id": gl.groups.get("demo").id})
    project.commits.create({"branch": "main", "commit_message": "ours", "actions": [
        {"action": "create", "file_path": "Dockerfile", "content": "FROM scratch\n"}]})
    tree_before = sorted(f["path"] for f in project.repository_tree(ref="main", recursive=True,
                                                                    get_all=True))
    before = world.snapshot(sandbox, ["adopt-prod"])
    jobs_before = sorted(j["name"] for j in server.get_jobs())
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "adopt", "team": "payments"}))

    code, out, err = await kepler(staging_refuses, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch", "--adopt", user="alice")  # a platform admin may adopt
    assert code == 1, out + err
    assert "staging: objects and routes" in err and "forbidden" in err
    assert server.get_job_config("kepler-adopt") == theirs  # their job, exactly as it was
    assert sorted(j["name"] for j in server.get_jobs()) == jobs_before  # no backup left
    # their namespace (used, never changed) and Service exactly as they were (create had
    # brought the Service up to date)
    assert world.differences(before, world.snapshot(sandbox, ["adopt-prod"])) == []
    # their project stays (adopted, never deleted), its files as they were, no webhook left
    assert sorted(f["path"] for f in project.repository_tree(ref="main", recursive=True,
                                                             get_all=True)) == tree_before
    assert project.files.get("Dockerfile", ref="main").decode() == b"FROM scratch\n"
    assert project.hooks.list(get_all=True) == []
    status = json.loads((await kepler(staging_refuses, "status", "adopt", "--env", "all", "-o", "json"))[1])
    assert status["outcome"] == "rolled_back", status
    assert any("or put back the one it adopted" in u for u in status["undone"])
    assert "prod: put back Service adopt as it was" in status["undone"]
    assert "put back the files this run committed if it adopted the project" in status["undone"]

    # where every cluster answers, the create adopts the job and drops its backup
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch", "--adopt", user="alice")
    assert code == 0, out + err
    assert "Kepler build job for adopt" in server.get_job_config("kepler-adopt")
    assert sorted(j["name"] for j in server.get_jobs()) == jobs_before
    status = json.loads((await kepler(platform_file, "status", "adopt", "--env", "all", "-o", "json"))[1])
    assert any(s["name"] == "Jenkins job: drop the backup of its old config" and s["outcome"] == "done"
               for s in status["steps"])
    await keep_history(dev_env.client, "create-adopting-a-jenkins-job", "adopt@all")
