"""Secrets never leave the worker's environment: run every main workflow type with
distinctive token values, then scan each workflow's full history (as `temporal workflow
show --output json` prints it), the worker's log and every notification payload."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kepler.models import CanaryRequest, CreateServiceRequest, DecommissionRequest, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.scale import ResourcesRequest, ScaleRequest
from kepler.train import TrainMember, TrainRequest
from sandbox.serve import Sandbox
from kepler.clients import operations as ops
from tests.conftest import platform_yaml
from tests.receivers import HttpReceiver
from tests.helpers import decide, sandbox_fixture, signed
from tests.workers import WorkerProcess, wait_for

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SECRETS = {
    "KEPLER_GITLAB_TOKEN": "glpat-SCANME-gitlab-7d1f",
    "KEPLER_JENKINS_TOKEN": "jenkins-SCANME-token-92ab",
    "KEPLER_REGISTRY_PASSWORD": "registry-SCANME-pass-31c0",
    "KEPLER_WEBHOOK_SECRET": "webhook-SCANME-secret-5e77",
    "KEPLER_SLACK_SIGNING_SECRET": "slack-SCANME-signing-0aa9",
    "KEPLER_SMTP_PASSWORD": "smtp-SCANME-pass-b4d2",
}
QUEUE = "secrets-scan"


box = sandbox_fixture("secrets", build_seconds=0.1, seconds_per_replica=0.05,
                      gitlab_token=SECRETS["KEPLER_GITLAB_TOKEN"],
                      jenkins_token=SECRETS["KEPLER_JENKINS_TOKEN"])


async def test_no_secret_in_histories_logs_or_notifications(box: Sandbox, dev_env: Any,
                                                            tmp_path: Path) -> None:
    receiver = HttpReceiver()
    address = dev_env.client.service_client.config.target_host
    config = yaml.safe_load(platform_yaml(box.urls, address, QUEUE))
    config["registry"]["username"] = "kepler"
    config["notifications"] = {"channels": {"audit": {"type": "webhook", "url": receiver.url}},
                               "routes": [{"channels": ["audit"], "events": ["*"]}]}
    config["decommission"] = {"min_soak": "1s"}  # the platform may allow a short soak
    platform_file = tmp_path / "kepler.yaml"
    platform_file.write_text(yaml.safe_dump(config))
    log = tmp_path / "worker.log"
    worker = await WorkerProcess(platform_file, log, {**SECRETS, "KEPLER_LOG_FORMAT": "json"}).start()
    client = dev_env.client
    try:
        async def run(req: Any, approver: str | None = None) -> None:
            started = await ops.start(client, signed(req), QUEUE)
            if approver:
                await wait_for(lambda: _pending(client, started.workflow_id), 60, "an approval")
                await decide(client, getattr(req, "service", ""), started.workflow_id.split("@")[1], approver)
            try:
                await asyncio.wait_for(started.handle.result(), 120)
            except Exception:  # noqa: BLE001 - outcomes are not what this test is about
                pass

        await run(CreateServiceRequest(spec=ServiceSpec(name="vault", team="t", replicas=1,
                                                        config_files={"a": "1"}), requested_by="carol"))
        await run(ReleaseRequest(service="vault", env="staging", ref="main", requested_by="carol"))
        await run(ReleaseRequest(service="vault", env="prod", ref="main", requested_by="carol"), "alice")
        await run(ScaleRequest(service="vault", env="staging", replicas=2, requested_by="carol"))
        await run(ResourcesRequest(service="vault", env="staging", cpu="200m", requested_by="carol"))
        await run(RollbackRequest(service="vault", env="staging", requested_by="carol"))
        await run(CanaryRequest(service="vault", env="staging", ref="main", requested_by="carol",
                                steps=[50], interval="10s"))
        await run(TrainRequest(name="nightly", env="staging", requested_by="carol",
                               members=[TrainMember(service="vault", ref="main")]))
        await run(DecommissionRequest(service="vault", requested_by="carol", soak="1s"), "alice")
    finally:
        await worker.stop()
        receiver.close()

    runs = [(wf.id, wf.run_id) async for wf in client.list_workflows(f"TaskQueue = '{QUEUE}'")]
    kinds = {wf.workflow_type async for wf in client.list_workflows(f"TaskQueue = '{QUEUE}'")}
    assert {"CreateService", "ReleaseVersion", "Scale", "SetResources", "Rollback", "Canary",
            "ReleaseTrain", "Decommission"} <= kinds, kinds
    leaks: list[str] = []
    for workflow_id, run_id in runs:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "temporal"), "workflow", "show", "--workflow-id", workflow_id, "--run-id", run_id,
            "--output", "json", "--address", address, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0 and '"events"' in text and "vault" in text, err.decode()[-500:]
        leaks += [f"history of {workflow_id}/{run_id}: {name}" for name, value in SECRETS.items()
                  if value in text]
    worker_log = log.read_text()
    assert '"service"' in worker_log  # the log is there and structured
    leaks += [f"worker log: {name}" for name, value in SECRETS.items() if value in worker_log]
    assert len(receiver.received) >= 5
    for message in receiver.received:
        blob = message.body.decode() + repr(message.headers)
        leaks += [f"notification: {name}" for name, value in SECRETS.items() if value in blob]
    assert not leaks, leaks


async def _pending(client: Any, workflow_id: str) -> bool:
    try:
        return (await ops.status(client, workflow_id)).pending_approval is not None
    except Exception:  # noqa: BLE001 - not started yet
        return False
