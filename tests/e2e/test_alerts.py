"""End to end: Alertmanager webhooks (version 4 payloads) against POST /alertmanager, the
real dev server and worker, and the sandbox: a firing alert rolls a service back once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from kepler.alerts import AlertsConfig
from kepler.settings import Secrets, load_platform
from sandbox.serve import Sandbox
from starter import alerts
from tests.helpers import keep_history
from tests.workflows.test_alert import payload
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e
TOKEN = "am-secret-token"


def image_of(sandbox: Sandbox, service: str, env: str) -> str:
    d = apps(sandbox).read_namespaced_deployment(service, f"{service}-{env}")
    return d.spec.template.spec.containers[0].image


async def operations(platform_file: Path, service: str, env: str) -> list[str]:
    code, out, err = await kepler(platform_file, "history", service, "--env", env, "-o", "json")
    assert code == 0, err
    return [r["operation"] for r in json.loads(out)]


async def test_alertmanager_webhook_rolls_back_once(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    spec = {"name": "ledger", "team": "fin", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    assert (await kepler(platform_file, "release", "ledger", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0
    v1 = image_of(sandbox, "ledger", "staging")
    project = gitlab_client(sandbox).projects.get("demo/ledger")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "v2.txt", "content": "2\n"}]})
    assert (await kepler(platform_file, "release", "ledger", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0
    v2 = image_of(sandbox, "ledger", "staging")
    assert v2 != v1

    platform = load_platform(platform_file)
    platform = platform.model_copy(update={"alerts": AlertsConfig.model_validate({
        **platform.alerts.model_dump(),  # the receiver signs as `alerts`, a system identity
        "rollback": [{"match": {"severity": "critical"}, "envs": ["staging", "prod"]}]})})
    app = alerts.create_app(platform, Secrets(alertmanager_token=SecretStr(TOKEN)),
                            client=dev_env.client, wait_for_outcome=20)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://kepler-alerts") as http:
        firing = payload(kepler_service="ledger")

        # unauthenticated, wrongly authenticated, malformed: refused, nothing changes
        assert (await http.post("/alertmanager", json=firing)).status_code == 401
        r = await http.post("/alertmanager", json=firing, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await http.post("/alertmanager", json={**firing, "version": "3"}, headers=auth)
        assert r.status_code == 400 and "version" in r.json()["error"]
        r = await http.post("/alertmanager", content=b"{not json", headers=auth)
        assert r.status_code == 400
        assert "alert" not in await operations(platform_file, "ledger", "staging")

        # not actionable: resolved, below the policy, unknown env, not Kepler's
        for body, reason in ((payload("resolved", kepler_service="ledger"), "resolved"),
                             (payload(kepler_service="ledger", severity="warning"), "no rule"),
                             (payload(kepler_service="ledger", kepler_env="qa"), "unknown environment")):
            r = await http.post("/alertmanager", json=body, headers=auth)
            assert r.status_code == 200 and r.json()["results"][0]["action"] == "ignored"
            assert reason in r.json()["results"][0]["reason"]
        assert image_of(sandbox, "ledger", "staging") == v2

        # firing and matching: a rollback to the previous version, recorded
        r = await http.post("/alertmanager", json=firing, headers=auth)
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        assert result["action"] == "rollback_started" and result["target"] == "ledger@staging"
        status = await wait_for_outcome(platform_file, "ledger", "staging")
        assert status["operation"] == "rollback" and status["outcome"] == "succeeded"
        assert status["requested_by"] == "alerts" and status["requester_verified"]
        assert image_of(sandbox, "ledger", "staging") == v1
        async for execution in dev_env.client.list_workflows('KeplerOperation = "alert"'):
            await keep_history(dev_env.client, "alert-rollback", execution.id, execution.run_id)

        # the same firing alert again: nothing new
        r = await http.post("/alertmanager", json=firing, headers=auth)
        assert r.json()["results"][0]["action"] == "duplicate"
        ops = await operations(platform_file, "ledger", "staging")
        assert ops.count("rollback") == 1 and ops.count("alert") == 1
        assert image_of(sandbox, "ledger", "staging") == v1

        # an operation holds the lock (a release awaiting approval in prod): left alone
        code, out, err = await kepler(platform_file, "release", "ledger", "--env", "prod",
                                      "--from", "staging")
        assert code == 0, err
        await wait_for_stage(platform_file, "ledger", "prod", "awaiting approval")
        r = await http.post("/alertmanager", json=payload(kepler_service="ledger", kepler_env="prod"),
                            headers=auth)
        (result,) = r.json()["results"]
        assert result["action"] == "busy" and "release" in result["reason"], result
        state = json.loads((await kepler(platform_file, "status", "ledger", "--env", "prod",
                                         "-o", "json"))[1])
        assert state["operation"] == "release" and state["stage"] == "awaiting approval"
        assert (await kepler(platform_file, "cancel", "ledger", "--env", "prod"))[0] == 0
