"""Each activity against the sandbox, through the real client libraries, including
injected faults: transient ones are classified retryable and a retry gets through;
conflicts are re-read and re-applied; permanent ones fail at once with a type."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import gitlab
import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gitlab import GitLabActivities
from activities.kubernetes.istio import IstioActivities
from activities.jenkins import JenkinsActivities, job_config
from activities.kubernetes.workloads import DeploymentActivities
from activities.registry import RegistryActivities
from kepler import manifests
from kepler.spec import ServiceSpec
from kepler.settings import Platform, Secrets, parse_platform
from kepler.payloads import (
    ApplyObjects, ApplyRelease, Authorization, BuildRequest, EnsureHook, EnsureJob, EnsureProject, ImageQuery, ReadSpec,
    DeployRelease, ReleaseRecord, ReleaseTarget, ResolveRef, RouteWeights, UndoCreated, WaitRollout,
)
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.conftest import platform_yaml

from datetime import datetime, timedelta, timezone


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    settings = SandboxSettings(state_dir=tmp_path_factory.mktemp("acts"), build_seconds=0.1,
                               seconds_per_replica=0.05)
    sandbox = Sandbox(settings).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def platform(box: Sandbox) -> Platform:
    return parse_platform(platform_yaml(box.urls, "127.0.0.1:1", "unused"))


def fault(box: Sandbox, standin: str, **rule: object) -> None:
    httpx.post(f"{box.urls[standin]}/_sandbox/faults", json=rule).raise_for_status()


def faults_left(box: Sandbox, standin: str) -> int:
    return len(httpx.get(f"{box.urls[standin]}/_sandbox/faults").json())


def run(fn, *args):  # noqa: ANN001, ANN202 - thin wrapper over the SDK's test harness
    return ActivityEnvironment().run(fn, *args)


def apps_api(box: Sandbox) -> Any:
    from kubernetes import client
    config = client.Configuration()
    config.host = box.urls["kubernetes"]
    return client.AppsV1Api(client.ApiClient(config))


def expect(kind: str, fn, *args) -> ApplicationError:  # noqa: ANN001
    with pytest.raises(ApplicationError) as e:
        run(fn, *args)
    assert e.value.type == kind, e.value
    return e.value


def test_gitlab_create_adopt_resolve_read_and_undo(box: Sandbox, platform: Platform) -> None:
    gl = GitLabActivities(platform, Secrets())
    spec = "name: cart\nteam: shop\n"
    project = run(gl.ensure_project, EnsureProject(service="cart", template="go", spec_yaml=spec, run_id="r1"))
    assert project.created and project.path == "demo/cart"
    again = run(gl.ensure_project, EnsureProject(service="cart", template="go", spec_yaml=spec, run_id="r2"))
    assert not again.created and again.project_id == project.project_id  # adopted, not duplicated
    commit = run(gl.resolve_ref, ResolveRef(service="cart", ref="main"))
    assert len(commit.sha) == 40
    # the commit's time as GitLab says it (lead time: kepler metrics)
    committed = httpx.get(f"{box.urls['gitlab']}/api/v4/projects/demo%2Fcart/repository/commits/main",
                          headers={"PRIVATE-TOKEN": box.settings.gitlab_token}).json()["committed_date"]
    assert commit.committed_at == datetime.fromisoformat(committed) and commit.committed_at.tzinfo
    assert run(gl.read_spec, ReadSpec(service="cart", sha=commit.sha)).team == "shop"
    error = expect("NotFound", gl.resolve_ref, ResolveRef(service="cart", ref="no-such-branch"))
    assert error.non_retryable and "no-such-branch" in str(error)

    commits = "/projects/demo(%2F|/)cart/repository/commits/main$"
    fault(box, "gitlab", method="GET", path=commits, status=503, count=2)
    assert run(gl.resolve_ref, ResolveRef(service="cart", ref="main")).sha == commit.sha
    assert faults_left(box, "gitlab") == 0  # both 503s were met, and retried within the call
    fault(box, "gitlab", method="GET", path=commits, status=503, count=None)
    transient = expect("Unavailable", gl.resolve_ref, ResolveRef(service="cart", ref="main"))
    assert not transient.non_retryable  # an outage: the workflow's retry policy takes over
    httpx.delete(f"{box.urls['gitlab']}/_sandbox/faults")
    assert run(gl.resolve_ref, ResolveRef(service="cart", ref="main")).sha == commit.sha

    assert run(gl.delete_project_if_created, UndoCreated(service="cart", run_id="r2")) is False
    assert run(gl.delete_project_if_created, UndoCreated(service="cart", run_id="r1")) is True
    assert run(gl.delete_project_if_created, UndoCreated(service="cart", run_id="r1")) is False


def test_wrong_token_is_unauthorized_not_retried(platform: Platform) -> None:
    secrets = Secrets(gitlab_token="wrong", jenkins_token="wrong")
    expect("Unauthorized", GitLabActivities(platform, secrets).resolve_ref, ResolveRef(service="x", ref="main"))
    expect("Unauthorized", JenkinsActivities(platform, secrets).ensure_job,
           EnsureJob(service="x", repo_url="http://g/x.git", run_id="r"))


def test_jenkins_config_escapes_everything() -> None:
    hostile = "http://g/x.git</url></hudson.plugins.git.UserRemoteConfig><script>rm -rf /</script>"
    xml = job_config("shop", hostile, "run-<&>")
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.find(".//userRemoteConfigs/*/url").text == hostile
    assert root.find(".//script") is None
    assert "run-<&>" in root.findtext("description")


def test_jenkins_job_build_and_registry_digest(box: Sandbox, platform: Platform) -> None:
    gl, jk = GitLabActivities(platform, Secrets()), JenkinsActivities(platform, Secrets())
    reg = RegistryActivities(platform, Secrets())
    project = run(gl.ensure_project, EnsureProject(service="api", template="python",
                                                   spec_yaml="name: api\nteam: t\n", run_id="r1"))
    assert run(jk.ensure_job, EnsureJob(service="api", repo_url=project.http_url, run_id="r1")) is True
    server = jk.client()
    r1_config = server.get_job_config("kepler-api")
    server.reconfig_job("kepler-api", r1_config.replace("Kepler build job", "Tuned build job"))
    tuned = server.get_job_config("kepler-api")
    # r2 adopts r1's job (tuned by hand since): its config is kept in a backup first, once
    for _ in range(2):  # a retried call keeps the first backup, the config as it was
        assert run(jk.ensure_job, EnsureJob(service="api", repo_url="http://elsewhere/api.git",
                                            run_id="r2")) is False
    assert "http://elsewhere/api.git" in server.get_job_config("kepler-api")
    assert "Tuned build job" in server.get_job_config("kepler-api.before-run-r2")
    assert run(jk.delete_job_if_created, UndoCreated(service="api", run_id="r2")) is True
    assert server.get_job_config("kepler-api") == tuned  # exactly as it was
    assert not server.job_exists("kepler-api.before-run-r2")
    assert run(jk.ensure_job, EnsureJob(service="api", repo_url=project.http_url, run_id="r3")) is False
    assert run(jk.drop_backup, UndoCreated(service="api", run_id="r3")) is True  # r3 went through
    assert run(jk.delete_job_if_created, UndoCreated(service="api", run_id="r3")) is False
    sha = run(gl.resolve_ref, ResolveRef(service="api", ref="main")).sha
    query = ImageQuery(repository="demo/api", reference=sha)
    assert run(reg.find_image, query) == ""
    fault(box, "jenkins", method="POST", path="buildWithParameters", status=502, count=None)
    expect("Unavailable", jk.build, BuildRequest(service="api", commit=sha, image=f"{platform.registry.host}/demo/api:{sha}"))
    httpx.delete(f"{box.urls['jenkins']}/_sandbox/faults")
    fault(box, "jenkins", method="GET", path="/queue/item/", drop=True, count=2)
    result = run(jk.build, BuildRequest(service="api", commit=sha, image=f"{platform.registry.host}/demo/api:{sha}"))
    assert result.result == "SUCCESS" and result.number >= 1
    assert faults_left(box, "jenkins") == 0  # dropped answers while following the queue: retried
    image = run(reg.find_image, query)
    assert image.startswith(f"{platform.registry.host}/demo/api@sha256:")

    import gitlab as gitlab_lib
    p = gitlab_lib.Gitlab(platform.gitlab.url, private_token=Secrets().gitlab_token.get_secret_value()).projects.get("demo/api")
    bad = p.commits.create({"branch": "main", "commit_message": "break the build", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "build:\n  fail: true\n"}]})
    error = expect("BuildFailed", jk.build, BuildRequest(service="api", commit=bad.id, image=f"{platform.registry.host}/demo/api:{bad.id}"))
    assert "FAILURE" in str(error) and "log tail" in str(error)
    assert run(jk.delete_job_if_created, UndoCreated(service="api", run_id="r2")) is False
    assert run(jk.delete_job_if_created, UndoCreated(service="api", run_id="r1")) is True
    assert [j["name"] for j in server.get_jobs() if j["name"].startswith("kepler-api")] == []


def test_kubernetes_objects_release_rollout_conflict_and_routes(box: Sandbox, platform: Platform) -> None:
    k8s = DeploymentActivities(platform)
    spec = ServiceSpec(name="web", team="t", replicas=2, config_files={"a": "1"})
    objects = manifests.for_environment(spec, "staging", "web-staging")
    applied = run(k8s.apply_objects, ApplyObjects(env="staging", manifests=objects, run_id="r1"))
    assert all(a.created for a in applied) and {a.kind for a in applied} >= {"Namespace", "Deployment", "VirtualService"}
    again = run(k8s.apply_objects, ApplyObjects(env="staging", manifests=objects, run_id="r2"))
    assert not any(a.created for a in again)

    import asyncio

    from sandbox.registry.oci import build_image, push_image  # a real image in the sandbox registry
    image = asyncio.run(push_image(box.urls["registry"], "demo/web", "v1", build_image(
        {"app": b"v1"}, {}, created="2026-01-01T00:00:00Z")))
    target = ReleaseTarget(env="staging", namespace="web-staging", service="web")
    change = ApplyRelease(target=target, image=f"{platform.registry.host}/demo/web@{image}", replicas=2,
                          config={"a": "2"}, resources=spec.resources, annotations={"kepler.dev/commit": "c1"},
                          authorization=Authorization())
    before = run(k8s.snapshot, target)
    fault(box, "kubernetes", method="PUT", path="/deployments/web$", status=409, count=1,
          body='{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409}')
    result = run(k8s.apply_release, change)  # the 409 is re-read and re-applied, not retried blindly
    assert result.changed
    assert not run(k8s.apply_release, change).changed  # already applied: nothing written
    run(k8s.wait_rollout, WaitRollout(target=target, generation=result.generation, timeout=timedelta(seconds=30)))
    now = run(k8s.snapshot, target)
    assert now.image == change.image and now.config == {"a": "2"} and now.replicas == 2
    assert [r.image for r in run(k8s.revision_history, target)][0] == change.image

    run(k8s.restore_release, before)
    restored = run(k8s.snapshot, target)
    assert restored.image == before.image and restored.config == before.config

    # apply, rollout and record in one activity: the record stamped once the rollout is done
    asked = datetime.now(timezone.utc) - timedelta(hours=1)
    record = ReleaseRecord(image=change.image, commit="c1", version="v1", at=asked,
                           release_id="web@staging/run-1", requested_by="carol")
    deployed = run(k8s.deploy_release, DeployRelease(release=change, timeout=timedelta(seconds=30),
                                                     record=record))
    assert deployed.applied.changed and deployed.recorded and deployed.rollout.ready_replicas == 2
    head = run(k8s.snapshot, target).history[0]
    assert (head.image, head.release_id, head.version) == (change.image, "web@staging/run-1", "v1")
    assert head.at > asked + timedelta(minutes=59)  # when it went live, not when it was asked
    again = run(k8s.deploy_release, DeployRelease(release=change, timeout=timedelta(seconds=30),
                                                  record=record))  # a retry: nothing new
    assert not again.applied.changed and len(run(k8s.snapshot, target).history) == 1
    error = expect("InvalidInput", k8s.deploy_release, DeployRelease(
        release=change, timeout=timedelta(seconds=30),
        record=record.model_copy(update={"image": before.image})))
    assert "record.image" in str(error)
    run(k8s.restore_release, before)

    # a canary mounts its own ConfigMap with the new config; the primary's is untouched
    canary = ReleaseTarget(env="staging", namespace="web-staging", service="web",
                           deployment="web-canary")
    run(k8s.apply_objects, ApplyObjects(env="staging", run_id="r3", manifests=[manifests.deployment(
        spec, "staging", "web-staging", name="web-canary", version="canary", image=change.image)]))
    run(k8s.apply_release, change.model_copy(update={"target": canary, "config": {"a": "3"}}))
    assert run(k8s.snapshot, canary).config == {"a": "3"}
    assert run(k8s.snapshot, target).config == before.config
    pod = apps_api(box).read_namespaced_deployment("web-canary", "web-staging").spec.template.spec
    assert [v.config_map.name for v in pod.volumes if v.config_map] == ["web-canary-config"]

    istio = IstioActivities(platform)
    previous = run(istio.set_routes, RouteWeights(env="staging", namespace="web-staging", service="web",
                                                  stable=80, canary=20, canary_header=True,
                                                  authorization=Authorization()))
    assert (previous.stable, previous.canary) == (100, 0)
    assert (run(istio.set_routes, RouteWeights(env="staging", namespace="web-staging", service="web")).canary) == 20

    assert run(k8s.delete_if_created, UndoCreated(service="web", run_id="r2", env="staging", kind="Service",
                                                  namespace="web-staging", name="web")) is False
    assert run(k8s.delete_if_created, UndoCreated(service="web", run_id="r1", env="staging", kind="Service",
                                                  namespace="web-staging", name="web")) is True


def test_rollout_of_a_missing_image_fails_fast(box: Sandbox, platform: Platform) -> None:
    k8s = DeploymentActivities(platform)
    spec = ServiceSpec(name="ghost", team="t", replicas=1)
    run(k8s.apply_objects, ApplyObjects(env="staging", manifests=manifests.for_environment(
        spec, "staging", "ghost-staging"), run_id="r1"))
    target = ReleaseTarget(env="staging", namespace="ghost-staging", service="ghost")
    missing = f"{platform.registry.host}/demo/ghost@sha256:" + "f" * 64
    result = run(k8s.apply_release, ApplyRelease(target=target, image=missing, replicas=1, config={},
                                                 resources=spec.resources, annotations={},
                                                 authorization=Authorization()))
    error = expect("RolloutFailed", k8s.wait_rollout, WaitRollout(
        target=target, generation=result.generation, timeout=timedelta(seconds=30)))
    assert "ImagePullBackOff" in str(error) or "ErrImagePull" in str(error)
    assert error.non_retryable


def test_a_rollout_that_times_out_says_what_its_pods_wait_for(box: Sandbox, platform: Platform) -> None:
    import asyncio

    from sandbox.registry.oci import build_image, push_image

    k8s = DeploymentActivities(platform)
    spec = ServiceSpec(name="sleepy", team="t", replicas=1)
    run(k8s.apply_objects, ApplyObjects(env="staging", manifests=manifests.for_environment(
        spec, "staging", "sleepy-staging"), run_id="r1"))
    digest = asyncio.run(push_image(box.urls["registry"], "demo/sleepy", "v1", build_image(
        {"app.txt": b"v1"}, {"io.kepler.sandbox.unready": "true"}, created="2025-01-01T00:00:00Z")))
    target = ReleaseTarget(env="staging", namespace="sleepy-staging", service="sleepy")
    result = run(k8s.apply_release, ApplyRelease(
        target=target, image=f"{platform.registry.host}/demo/sleepy@{digest}", replicas=1,
        config={}, resources=spec.resources, annotations={}, authorization=Authorization()))
    error = expect("RolloutFailed", k8s.wait_rollout, WaitRollout(
        target=target, generation=result.generation, timeout=timedelta(seconds=2)))
    assert "not rolled out after 0:00:02 (1/1 updated, 0 available): pod sleepy-" in str(error)
    assert str(error).endswith("not Ready"), error  # running, never ready: the image's label


def test_gitlab_webhook_added_then_removed_leaving_other_hooks(box: Sandbox, platform: Platform) -> None:
    """The undo of a create's webhook removes Kepler's hook and nothing else (an adopted
    project keeps the hooks its team added)."""
    url = "http://kepler.example/gitlab/push"
    config = platform.model_copy(update={"gitlab": platform.gitlab.model_copy(update={"webhook_url": url})})
    gl = GitLabActivities(config, Secrets())
    project = run(gl.ensure_project, EnsureProject(service="hooked", template="go",
                                                   spec_yaml="name: hooked\nteam: t\n", run_id="r1"))
    client = gitlab.Gitlab(box.urls["gitlab"], private_token="sandbox-gitlab-token")
    theirs = client.projects.get(project.project_id).hooks.create({"url": "http://ci.example/x"})
    hook = EnsureHook(project_id=project.project_id)
    assert run(gl.ensure_hook, hook) == "added"
    assert run(gl.ensure_hook, hook) == "already present"
    assert run(gl.remove_hook, hook) is True
    urls = [h.url for h in client.projects.get(project.project_id).hooks.list(get_all=True)]
    assert urls == [theirs.url]
    assert run(gl.remove_hook, hook) is False  # nothing of Kepler's left: a no-op


def test_a_stale_progress_deadline_does_not_fail_a_fresh_rollout(box: Sandbox, platform: Platform) -> None:
    """The Deployment still carries ProgressDeadlineExceeded from its last rollout when a new
    generation is applied; until the controller observes the new generation, that condition
    is about the old one and must not fail the new rollout."""
    k8s = DeploymentActivities(platform)
    spec = ServiceSpec(name="stale", team="t", replicas=1)
    run(k8s.apply_objects, ApplyObjects(env="staging", run_id="r1",
                                        manifests=manifests.for_environment(spec, "staging", "stale-staging")))
    import asyncio

    from sandbox.registry.oci import build_image, push_image
    digest = asyncio.run(push_image(box.urls["registry"], "demo/stale", "v1", build_image(
        {"app": b"v1"}, {}, created="2026-01-01T00:00:00Z")))
    target = ReleaseTarget(env="staging", namespace="stale-staging", service="stale")
    result = run(k8s.apply_release, ApplyRelease(
        target=target, image=f"{platform.registry.host}/demo/stale@{digest}", replicas=1, config={},
        resources=spec.resources, annotations={}, authorization=Authorization()))
    live = apps_api(box).api_client.sanitize_for_serialization(
        apps_api(box).read_namespaced_deployment("stale", "stale-staging"))
    live["status"] = {"observedGeneration": result.generation - 1, "replicas": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": "the previous rollout timed out"}]}
    # the first read answers as the API server may, before the controller has caught up
    fault(box, "kubernetes", method="GET", path="/deployments/stale$", status=200, count=1,
          body=json.dumps(live))
    done = run(k8s.wait_rollout, WaitRollout(target=target, generation=result.generation,
                                             timeout=timedelta(seconds=30)))
    assert done.ready_replicas == 1 and faults_left(box, "kubernetes") == 0
