"""The local Docker builder (`builder: docker`) against the real engine (Debian docker.io),
the real registry (Debian docker-registry), the sandbox's GitLab and Kubernetes, and the
real dev server and worker: build from the commit's archive, push, deploy by digest."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import gitlab
import httpx
import pytest
import yaml
from kubernetes import client as k8s
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.docker_build import DockerBuildActivities
from activities.kubernetes.client import Cluster
from deploy import rbac
from kepler.models import CreateServiceRequest, ReleaseReport, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.settings import Platform, Secrets, parse_platform
from kepler.payloads import BuildRequest
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.conftest import platform_yaml
from tests.docker_engine import BASE_IMAGE, Engine, engine  # noqa: F401
from tests.sandbox.test_registry import start_real_registry

pytestmark = pytest.mark.real
TASK_QUEUE = "kepler-docker"

GOOD = (f"FROM {BASE_IMAGE}\n"
        "COPY app.txt /srv/app.txt\n"
        "RUN echo compiled > /srv/built && cat /srv/app.txt\n"
        'LABEL io.kepler.sandbox.latency-ms="20"\n'
        'CMD ["/bin/sh", "-c", "sleep 3600"]\n')
BAD = (f"FROM {BASE_IMAGE}\n"
       "RUN echo 'compiling checkout' && echo 'error: undefined symbol pay_v3' && exit 3\n")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_real_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def world(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(SandboxSettings(state_dir=tmp_path_factory.mktemp("dbox"), registry_url=registry,
                                  standins=("gitlab", "kubernetes"))).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def platform(world: Sandbox, registry: str, engine: Engine, dev_env: Any) -> Platform:
    urls = {**world.urls, "registry": registry, "jenkins": "http://127.0.0.1:1"}
    data = yaml.safe_load(platform_yaml(urls, dev_env.client.service_client.config.target_host,
                                        TASK_QUEUE))
    data["builder"] = "docker"
    data["docker"] = {"host": engine.host, "network_mode": "none"}
    return parse_platform(yaml.safe_dump(data))


@pytest.fixture(scope="module")
async def worker(platform: Platform, dev_env: Any) -> AsyncIterator[None]:
    from worker import build_worker

    with ThreadPoolExecutor(max_workers=64) as executor:
        async with build_worker(dev_env.client, platform, Secrets(), executor):
            yield


def project(world: Sandbox, service: str) -> Any:
    gl = gitlab.Gitlab(world.urls["gitlab"], private_token=world.settings.gitlab_token)
    return gl.projects.get(f"demo/{service}")


def commit_dockerfile(world: Sandbox, service: str, dockerfile: str) -> str:
    commit = project(world, service).commits.create({
        "branch": "main", "commit_message": "docker builder", "actions": [
            {"action": "update", "file_path": "Dockerfile", "content": dockerfile},
            {"action": "create", "file_path": "app.txt", "content": f"hello from {service}\n"}]})
    return commit.id


async def create_service(dev_env: Any, service: str) -> None:
    spec = ServiceSpec.model_validate({"name": service, "team": "payments", "template": "python",
                                       "replicas": 2, "owners": ["alice"]})
    await dev_env.client.execute_workflow(
        "CreateService", CreateServiceRequest(spec=spec, requested_by="carol"),
        id=f"{service}@all", task_queue=TASK_QUEUE, result_type=ReleaseReport)


async def test_build_streams_log_heartbeats_and_pushes(
        world: Sandbox, registry: str, platform: Platform, engine: Engine, worker: Any,
        dev_env: Any) -> None:
    service = f"b{uuid.uuid4().hex[:8]}"
    await create_service(dev_env, service)
    sha = commit_dockerfile(world, service, GOOD)
    image = f"{platform.registry.host}/demo/{service}:{sha}"

    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    result = await asyncio.to_thread(  # a sync activity: keep the worker's event loop free
        env.run, DockerBuildActivities(platform, Secrets()).build,
        BuildRequest(service=service, commit=sha, image=image))

    head = httpx.head(f"{registry}/v2/demo/{service}/manifests/{sha}", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert head.status_code == 200 and result.digest == head.headers["Docker-Content-Digest"]
    building = [b for b in beats if b["phase"] == "building"]
    assert any("Step 1/" in b["step"] for b in building)
    assert any(f"hello from {service}" in line for b in building for line in b["log"])
    assert beats[-1] == {"phase": "pushed", "digest": result.digest}
    assert "sandbox-gitlab-token" not in repr(beats)


async def test_release_builds_with_docker_and_deploys_by_digest(
        world: Sandbox, registry: str, platform: Platform, worker: Any, dev_env: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []  # every Kubernetes request the activities make
    original = Cluster.call

    def recording(self: Cluster, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((method, path))
        return original(self, method, path, *args, **kwargs)
    monkeypatch.setattr(Cluster, "call", recording)
    service = f"r{uuid.uuid4().hex[:8]}"
    await create_service(dev_env, service)
    sha = commit_dockerfile(world, service, GOOD)

    report = await dev_env.client.execute_workflow(
        "ReleaseVersion", ReleaseRequest(service=service, env="staging", ref="main",
                                         requested_by="carol"),
        id=f"{service}@staging", task_queue=TASK_QUEUE, result_type=ReleaseReport)

    digest = httpx.head(f"{registry}/v2/demo/{service}/manifests/{sha}", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).headers["Docker-Content-Digest"]
    assert report.outcome == "succeeded" and report.commit == sha
    assert report.image == f"{platform.registry.host}/demo/{service}@{digest}"
    conf = k8s.Configuration()
    conf.host = world.urls["kubernetes"]
    deploy = k8s.AppsV1Api(k8s.ApiClient(conf)).read_namespaced_deployment(service, f"{service}-staging")
    assert deploy.spec.template.spec.containers[0].image == report.image
    assert deploy.status.available_replicas == 2
    history = await dev_env.client.get_workflow_handle(f"{service}@all").fetch_history()
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    assert "jenkins.ensure_job" not in scheduled  # the docker builder needs no Jenkins job
    # deploy/kubernetes's RBAC allows every request this create + release made
    assert len(calls) > 10
    denied = sorted({(m, p) for m, p in calls if not rbac.allowed(m, p)})
    assert denied == [], f"requests the worker's ClusterRoles would refuse: {denied}"


async def test_failed_build_fails_the_release_with_the_log_tail(
        world: Sandbox, platform: Platform, worker: Any, dev_env: Any) -> None:
    service = f"f{uuid.uuid4().hex[:8]}"
    await create_service(dev_env, service)
    commit_dockerfile(world, service, BAD)

    with pytest.raises(WorkflowFailureError) as failed:
        await dev_env.client.execute_workflow(
            "ReleaseVersion", ReleaseRequest(service=service, env="staging", ref="main",
                                             requested_by="carol"),
            id=f"{service}@staging", task_queue=TASK_QUEUE, result_type=ReleaseReport)
    message = str(failed.value.cause)
    assert "step 'build' failed" in message
    assert "error: undefined symbol pay_v3" in message and "non-zero code: 3" in message
    history = await dev_env.client.get_workflow_handle(f"{service}@staging").fetch_history()
    builds = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
              and e.activity_task_scheduled_event_attributes.activity_type.name == "docker.build"]
    assert len(builds) == 1
    failures = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert len(failures) == 1  # non-retryable: one attempt
    assert failures[0].activity_task_failed_event_attributes.failure.application_failure_info.type \
        == "BuildFailed"


def test_build_context_strips_the_archive_folder_and_refuses_escapes() -> None:
    import io
    import tarfile

    from activities.docker_build import build_context

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("svc-abc/Dockerfile", b"FROM x\n"), ("svc-abc/../../etc/passwd", b"x"),
                           ("svc-abc/src/app.py", b"print(1)\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("svc-abc/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/shadow"
        tar.addfile(link)
    with tarfile.open(fileobj=build_context(buf.getvalue())) as ctx:
        assert sorted(ctx.getnames()) == ["Dockerfile", "src/app.py"]
