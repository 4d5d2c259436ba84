"""Faults: a flaky world (20 % of Kepler's calls fail), an outage of GitLab and Jenkins,
Kubernetes conflicts, and permanent errors that must fail fast and visibly."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import gitlab
import httpx
import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker
from kubernetes import client as k8s

import workflows
from activities.kubernetes.client import Cluster, read_modify_write
from kepler.models import CreateServiceRequest, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.settings import Secrets, parse_platform
from kepler.payloads import BuildRequest, BuildResult, Commit, ResolveRef
from sandbox.serve import Sandbox
from sandbox.world import STANDINS
from kepler.clients import operations as ops
from tests.conftest import platform_yaml
from tests.fakes.world import FakeWorld, sha_of
from tests.helpers import sandbox_fixture
from worker import build_worker

BIN = Path(sys.executable).parent
KEPLER_CLIENTS = r"^(python-gitlab|python-requests|OpenAPI-Generator|kepler)/"


flaky_box = sandbox_fixture("flaky", build_seconds=0.1, seconds_per_replica=0.05)


def set_faults(box: Sandbox, rules: list[dict]) -> None:
    for name in STANDINS:
        httpx.delete(f"{box.urls[name]}/_sandbox/faults").raise_for_status()
        for rule in rules:
            httpx.post(f"{box.urls[name]}/_sandbox/faults", json=rule).raise_for_status()


@pytest.mark.e2e
async def test_fifty_releases_succeed_when_20_percent_of_calls_fail(flaky_box: Sandbox, dev_env: Any) -> None:
    queue = f"flaky-{uuid.uuid4().hex[:6]}"
    platform = parse_platform(platform_yaml(flaky_box.urls, "unused:1", queue))
    services = [f"flaky{i}" for i in range(int(os.environ.get("FLAKY_SERVICES", "10")))]
    gl = gitlab.Gitlab(flaky_box.urls["gitlab"], private_token=flaky_box.settings.gitlab_token,
                       user_agent="test-harness")  # the developer pushing code is not under test
    set_faults(flaky_box, [
        {"status": 503, "probability": 0.1, "count": None, "client": KEPLER_CLIENTS},
        {"drop": True, "probability": 0.1, "count": None, "client": KEPLER_CLIENTS},
    ])
    hits_before = sum(len(httpx.get(f"{flaky_box.urls[n]}/_sandbox/faults").json()) for n in STANDINS)
    try:
        with ThreadPoolExecutor(max_workers=64) as executor:
            async with build_worker(dev_env.client, platform, Secrets(), executor, queue):
                async def lifecycle(name: str) -> list[str]:
                    spec = ServiceSpec(name=name, team="t", replicas=1)
                    await (await ops.start(dev_env.client, CreateServiceRequest(
                        spec=spec, requested_by="carol"), queue)).handle.result()
                    outcomes = []
                    for n in range(int(os.environ.get("FLAKY_RELEASES", "5"))):
                        project = gl.projects.get(f"demo/{name}")
                        commit = project.commits.create({"branch": "main", "commit_message": f"v{n}",
                                                         "actions": [{"action": "create", "file_path": f"v{n}.txt",
                                                                      "content": str(n)}]})
                        started = await ops.start(dev_env.client, ReleaseRequest(
                            service=name, env="staging", ref=commit.id, requested_by="carol"), queue)
                        outcomes.append((await started.handle.result()).outcome)
                    return outcomes

                results = await asyncio.gather(*(lifecycle(s) for s in services))
    finally:
        set_faults(flaky_box, [])
    outcomes = [o for per_service in results for o in per_service]
    assert len(outcomes) == 50 and set(outcomes) == {"succeeded"}
    assert hits_before == 2 * len(STANDINS)


async def test_gitlab_and_jenkins_down_for_two_minutes(time_env) -> None:
    """Time-skipped: the release waits out the outage through its retry policy."""
    world = FakeWorld()
    real = {a.__temporal_activity_definition.name: a for a in world.activities()}
    outages: dict[str, dict[str, Any]] = {}

    def still_down(name: str) -> bool:
        scheduled = activity.info().current_attempt_scheduled_time
        outage = outages.setdefault(name, {"start": scheduled})
        outage["attempts"] = activity.info().attempt
        return scheduled - outage["start"] < timedelta(minutes=2)

    @activity.defn(name="gitlab.resolve_ref")
    async def resolve_ref(r: ResolveRef) -> Commit:
        if still_down("gitlab.resolve_ref"):
            raise ApplicationError("GitLab: 502 Bad Gateway", type="Unavailable")
        return await real["gitlab.resolve_ref"](r)

    @activity.defn(name="jenkins.build")
    async def build(b: BuildRequest) -> BuildResult:
        if still_down("jenkins.build"):
            raise ApplicationError("Jenkins: connection refused", type="Unavailable")
        return await real["jenkins.build"](b)

    broken = ("gitlab.resolve_ref", "jenkins.build")
    acts = [a for n, a in real.items() if n not in broken] + [resolve_ref, build]
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL, activities=acts):
        started = await ops.start(time_env.client, ReleaseRequest(
            service="shop", env="staging", ref="v1", requested_by="carol"), queue)
        report = await started.handle.result()
    assert report.outcome == "succeeded" and report.commit == sha_of("v1")
    for name in broken:  # retried through the whole outage, then went on
        assert outages[name]["attempts"] >= 5, (name, outages[name])

def test_conflicts_are_reread_and_never_overwrite_a_concurrent_change(sandbox: Sandbox) -> None:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    api = k8s.ApiClient(conf)
    core = k8s.CoreV1Api(api)
    ns = f"race-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    attempts = []

    def change(cm: dict) -> bool:
        attempts.append(cm["metadata"]["resourceVersion"])
        if len(attempts) == 1:  # someone else writes between our read and our write
            core.patch_namespaced_config_map("cfg", ns, {"data": {"theirs": "kept"}})
        cm.setdefault("data", {})["ours"] = "applied"
        return True

    result = read_modify_write(Cluster(api), "ConfigMap", ns, "cfg", change)
    assert len(attempts) == 2  # the stale write got 409 and was re-read, not forced
    assert result["data"] == {"a": "1", "theirs": "kept", "ours": "applied"}


@pytest.mark.e2e
async def test_permanent_error_fails_fast_and_shows_in_status_and_ui(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any) -> None:
    from tests.e2e.test_release import kepler

    spec = ServiceSpec(name="fastfail", team="t")
    await (await ops.start(dev_env.client, CreateServiceRequest(spec=spec, requested_by="carol"),
                           "kepler-e2e")).handle.result()
    code, out, err = await kepler(platform_file, "release", "fastfail", "--env", "staging",
                                  "--ref", "no-such-tag", "--watch")
    assert code == 1 and "ref 'no-such-tag' does not exist" in err
    code, out, _ = await kepler(platform_file, "status", "fastfail", "--env", "staging", "-o", "json")
    status = json.loads(out)
    assert status["outcome"] == "failed" and "no-such-tag" in status["error"]
    assert status["steps"][-1]["name"] == "resolve ref"
    history = await dev_env.client.get_workflow_handle("fastfail@staging").fetch_history()
    reads = [json.loads(e.marker_recorded_event_attributes.details["data"].payloads[0].data)
             for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
             and e.marker_recorded_event_attributes.marker_name == "core_local_activity"]
    resolved = [r for r in reads if r["activity_type"] == "gitlab.resolve_ref"]
    assert [r["attempt"] for r in resolved] == [1]  # a read (a local activity): not retried
    closing = history.events[-1]
    assert closing.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    assert "no-such-tag" in closing.workflow_execution_failed_event_attributes.failure.message
