"""The Jenkins stand-in, driven with python-jenkins: jobs, queue, builds that push real images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator
from xml.sax.saxutils import escape

import gitlab
import httpx
import jenkins
import pytest

from sandbox.registry.oci import OCI_MANIFEST
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.helpers import wait_until
from tests.sandbox.test_registry import start_real_registry


def pipeline_config(repository_url: str, concurrent: bool = True) -> str:
    """A standard parameterised pipeline-from-SCM job, as CreateService would write it."""
    disable = ("<org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty/>"
               if not concurrent else "")
    return f"""<?xml version='1.1' encoding='UTF-8'?>
<flow-definition plugin="workflow-job">
  <description>Kepler build</description>
  <properties>
    {disable}
    <hudson.model.ParametersDefinitionProperty>
      <parameterDefinitions>
        <hudson.model.StringParameterDefinition><name>GIT_REF</name><defaultValue>main</defaultValue></hudson.model.StringParameterDefinition>
        <hudson.model.StringParameterDefinition><name>IMAGE</name><defaultValue></defaultValue></hudson.model.StringParameterDefinition>
      </parameterDefinitions>
    </hudson.model.ParametersDefinitionProperty>
  </properties>
  <definition class="org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition" plugin="workflow-cps">
    <scm class="hudson.plugins.git.GitSCM" plugin="git">
      <configVersion>2</configVersion>
      <userRemoteConfigs>
        <hudson.plugins.git.UserRemoteConfig><url>{escape(repository_url)}</url></hudson.plugins.git.UserRemoteConfig>
      </userRemoteConfigs>
      <branches><hudson.plugins.git.BranchSpec><name>${{GIT_REF}}</name></hudson.plugins.git.BranchSpec></branches>
    </scm>
    <scriptPath>Jenkinsfile</scriptPath>
    <lightweight>false</lightweight>
  </definition>
  <disabled>false</disabled>
</flow-definition>
"""


def start_box(tmp_path: Path, **overrides: Any) -> Sandbox:
    settings = SandboxSettings(state_dir=tmp_path, standins=("gitlab", "jenkins", "registry"),
                               build_seconds=0.2, **overrides)
    return Sandbox(settings).start()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = start_box(tmp_path)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def clients(box: Sandbox) -> tuple[gitlab.Gitlab, jenkins.Jenkins]:
    s = box.settings
    return (gitlab.Gitlab(box.urls["gitlab"], private_token=s.gitlab_token),
            jenkins.Jenkins(box.urls["jenkins"], username=s.jenkins_user, password=s.jenkins_token))


def new_service(gl: gitlab.Gitlab, server: jenkins.Jenkins, name: str, *, sandbox_yaml: str | None,
                concurrent: bool = True):
    project = gl.projects.create({
        "name": name, "path": name, "namespace_id": gl.groups.get("demo").id,
        "use_custom_template": True, "template_name": "python",
        "group_with_project_templates_id": gl.groups.get("kepler-templates").id})
    if sandbox_yaml is not None:
        project.commits.create({"branch": "main", "commit_message": f"Behaviour: {sandbox_yaml.strip()}",
                                "actions": [{"action": "create", "file_path": "kepler-sandbox.yaml",
                                             "content": sandbox_yaml}]})
    server.create_job(name, pipeline_config(project.http_url_to_repo, concurrent))
    return project, project.commits.get("main").id


def run_to_end(server: jenkins.Jenkins, job: str, params: dict[str, str]) -> dict[str, Any]:
    queue_id = server.build_job(job, params)
    executable = wait_until(lambda: server.get_queue_item(queue_id).get("executable"),
                            what="the queue item to become a build")
    return wait_until(lambda: (info := server.get_build_info(job, executable["number"]))["result"] and info,
                      what="the build to finish")


def image_config(registry: str, repository: str, tag: str) -> tuple[str, dict[str, Any]]:
    head = httpx.head(f"{registry}/v2/{repository}/manifests/{tag}", headers={"accept": OCI_MANIFEST})
    assert head.status_code == 200, head.text
    digest = head.headers["docker-content-digest"]
    manifest = httpx.get(f"{registry}/v2/{repository}/manifests/{digest}",
                         headers={"accept": OCI_MANIFEST}).json()
    config = httpx.get(f"{registry}/v2/{repository}/blobs/{manifest['config']['digest']}").json()
    return digest, config


def test_whoami_version_and_auth(box: Sandbox) -> None:
    _, server = clients(box)
    assert server.get_version()
    assert server.get_whoami()["id"] == box.settings.jenkins_user
    intruder = jenkins.Jenkins(box.urls["jenkins"], username="kepler", password="wrong")
    with pytest.raises(jenkins.JenkinsException, match="401"):
        intruder.get_whoami()
    assert httpx.get(f"{box.urls['jenkins']}/job/x/api/json").status_code == 401


def test_build_pushes_an_image_labelled_by_the_commit(box: Sandbox) -> None:
    gl, server = clients(box)
    project, sha = new_service(gl, server, "svc", sandbox_yaml="error_rate: 0.2\nlatency_ms: 800\n")
    assert server.job_exists("svc")
    assert "GitSCM" in server.get_job_config("svc")
    registry_host = box.urls["registry"].removeprefix("http://")
    build = run_to_end(server, "svc", {"GIT_REF": sha, "IMAGE": f"{registry_host}/demo/svc:{sha}"})
    assert build["result"] == "SUCCESS" and build["number"] == 1 and not build["building"]
    console = server.get_build_console_output("svc", 1)
    digest, config = image_config(box.urls["registry"], "demo/svc", sha)
    assert f"Checking out Revision {sha}" in console and f"digest: {digest}" in console
    assert build["description"] == f"{registry_host}/demo/svc:{sha}@{digest}"
    labels = config["config"]["Labels"]
    assert labels["io.kepler.sandbox.error-rate"] == "0.2"
    assert labels["io.kepler.sandbox.latency-ms"] == "800"
    assert labels["io.kepler.sandbox.crash"] == "false"
    assert labels["org.opencontainers.image.revision"] == sha
    # Build numbers increase per job; the same commit gives the same image digest.
    again = run_to_end(server, "svc", {"GIT_REF": "main", "IMAGE": f"{registry_host}/demo/svc:main"})
    assert again["number"] == 2 and image_config(box.urls["registry"], "demo/svc", "main")[0] == digest


def test_a_commit_can_make_its_build_fail(box: Sandbox) -> None:
    gl, server = clients(box)
    _, sha = new_service(gl, server, "broken", sandbox_yaml="build:\n  fail: true\n")
    registry_host = box.urls["registry"].removeprefix("http://")
    build = run_to_end(server, "broken", {"GIT_REF": sha, "IMAGE": f"{registry_host}/demo/broken:{sha}"})
    assert build["result"] == "FAILURE"
    tail = server.get_build_console_output("broken", build["number"]).splitlines()[-4:]
    assert any("build.fail: true" in line and line.startswith("ERROR") for line in tail), tail
    assert tail[-1] == "Finished: FAILURE"
    assert httpx.get(f"{box.urls['registry']}/v2/demo/broken/tags/list").status_code == 404

    missing = run_to_end(server, "broken", {"GIT_REF": "no-such-branch", "IMAGE": f"{registry_host}/demo/broken:x"})
    assert missing["result"] == "FAILURE"
    assert "Couldn't find any revision" in server.get_build_console_output("broken", missing["number"])


def test_queue_waits_for_a_running_build_and_stop_aborts(box: Sandbox) -> None:
    gl, server = clients(box)
    _, sha = new_service(gl, server, "slow", sandbox_yaml="build:\n  seconds: 30\n", concurrent=False)
    image = f"{box.urls['registry'].removeprefix('http://')}/demo/slow:{sha}"
    first = server.build_job("slow", {"GIT_REF": sha, "IMAGE": image})
    number = wait_until(lambda: server.get_queue_item(first).get("executable"))["number"]
    second = server.build_job("slow", {"GIT_REF": "main", "IMAGE": image})
    assert server.build_job("slow", {"GIT_REF": "main", "IMAGE": image}) == second  # merged
    waiting = wait_until(lambda: (item := server.get_queue_item(second))["why"] and "in progress"
                         in item["why"] and item, what="the second item to wait")
    assert waiting["executable"] is None
    assert server.get_build_info("slow", number)["building"]
    server.stop_build("slow", number)
    stopped = wait_until(lambda: server.get_build_info("slow", number)["result"])
    assert stopped == "ABORTED"
    follow = wait_until(lambda: server.get_queue_item(second).get("executable"))
    assert follow["number"] == number + 1
    server.stop_build("slow", follow["number"])
    assert wait_until(lambda: server.get_build_info("slow", follow["number"])["result"]) == "ABORTED"


def test_job_errors_reconfig_and_delete(box: Sandbox) -> None:
    gl, server = clients(box)
    new_service(gl, server, "jobby", sandbox_yaml=None)
    with pytest.raises(jenkins.JenkinsException, match="already exists"):
        server.create_job("jobby", pipeline_config("http://x/demo/jobby.git"))
    auth = (box.settings.jenkins_user, box.settings.jenkins_token)
    raw = httpx.post(f"{box.urls['jenkins']}/createItem", params={"name": "jobby"}, auth=auth,
                     content=pipeline_config("http://x/demo/jobby.git"), headers={"content-type": "text/xml"})
    assert raw.status_code == 400 and "A job already exists with the name" in raw.headers["x-error"]
    evil = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><flow-definition>&a;</flow-definition>'
    bad = httpx.post(f"{box.urls['jenkins']}/createItem", params={"name": "evil"}, auth=auth, content=evil)
    assert bad.status_code == 400 and not server.job_exists("evil")
    with pytest.raises(jenkins.JenkinsException, match="does not exist"):
        server.get_job_info("nope")
    assert httpx.get(f"{box.urls['jenkins']}/job/nope/api/json", auth=auth).status_code == 404
    server.reconfig_job("jobby", pipeline_config("http://x/demo/other.git"))
    assert "demo/other.git" in server.get_job_config("jobby")
    server.delete_job("jobby")
    assert not server.job_exists("jobby")


def test_pushes_to_the_real_docker_registry(tmp_path: Path) -> None:
    process, registry = start_real_registry(tmp_path / "registry")
    sandbox = start_box(tmp_path / "state", registry_url=registry)
    try:
        assert sandbox.world.registry_url == registry
        gl, server = clients(sandbox)
        _, sha = new_service(gl, server, "real", sandbox_yaml="crash: true\n")
        host = registry.removeprefix("http://")
        build = run_to_end(server, "real", {"GIT_REF": sha, "IMAGE": f"{host}/demo/real:{sha}"})
        assert build["result"] == "SUCCESS", server.get_build_console_output("real", build["number"])
        digest, config = image_config(registry, "demo/real", sha)
        assert config["config"]["Labels"]["io.kepler.sandbox.crash"] == "true"
        assert build["description"].endswith(digest)
    finally:
        sandbox.stop()
        process.terminate()
        process.wait(timeout=10)


def test_state_survives_restart_and_faults(tmp_path: Path) -> None:
    sandbox = start_box(tmp_path)
    gl, server = clients(sandbox)
    _, sha = new_service(gl, server, "kept", sandbox_yaml=None)
    host = sandbox.urls["registry"].removeprefix("http://")
    assert run_to_end(server, "kept", {"GIT_REF": sha, "IMAGE": f"{host}/demo/kept:1"})["result"] == "SUCCESS"
    sandbox.stop()
    sandbox = start_box(tmp_path)
    try:
        _, server = clients(sandbox)
        assert server.get_build_info("kept", 1)["result"] == "SUCCESS"
        assert server.get_job_info("kept")["nextBuildNumber"] == 2
        url = sandbox.urls["jenkins"]
        rule = {"method": "GET", "path": "/me/api/json", "status": 503, "count": 1}
        httpx.post(f"{url}/_sandbox/faults", json=rule).raise_for_status()
        with pytest.raises(jenkins.BadHTTPException):  # python-jenkins' word for a 5xx
            server.get_whoami()
        assert server.get_whoami()["id"] == sandbox.settings.jenkins_user  # the retry succeeds
        httpx.post(f"{url}/_sandbox/faults", json={"path": "/job/kept/1/api/json", "drop": True}).raise_for_status()
        with pytest.raises(Exception):
            server.get_build_info("kept", 1)
        assert server.get_build_info("kept", 1)["number"] == 1
        audit = [e["action"] for e in sandbox.world.audits["jenkins"].entries]
        assert {"create_job", "queue_build", "start_build", "finish_build"} <= set(audit)
        assert json.dumps(audit)
    finally:
        sandbox.stop()
