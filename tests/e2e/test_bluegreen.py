"""Blue-green end to end: the `kepler` CLI, the real worker on the dev server, the sandbox's
Kubernetes and mesh. The spec says blue-green for staging; a first release rolls out in
place, the next comes up beside it, takes all traffic in one route write, and `kepler
rollback` in its window puts it back in one route write with the old version never stopped;
a release that is promoted in its window ends with the primary running it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from activities.kubernetes.istio import current_weights
from kepler import naming
from kepler.alerts import AlertsConfig
from kepler.settings import Secrets, load_platform
from sandbox.serve import Sandbox
from starter import alerts
from tests.e2e.test_canary import routes_of
from tests.e2e.test_canary_mirror import create_and_release
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome
from tests.workers import wait_for
from tests.workflows.test_alert import payload

pytestmark = pytest.mark.e2e

NS = "azure-staging"
SPEC = {"name": "azure", "team": "t", "replicas": 2,
        "environments": {"staging": {"strategy": "blue-green"}},
        "blue_green": {"interval": "10s", "rollback_window": "30m"}}


def image_of(sandbox: Sandbox, name: str) -> str:
    return apps(sandbox).read_namespaced_deployment(name, NS).spec.template.spec.containers[0].image


async def status_of(platform_file: Path, service: str = "azure") -> dict[str, Any]:
    out = (await kepler(platform_file, "status", service, "--env", "staging", "-o", "json"))[1]
    return json.loads(out or "{}")


async def in_window(platform_file: Path, service: str = "azure") -> bool:
    return (await status_of(platform_file, service)).get("stage") == "rollback window"


async def test_switch_then_kepler_rollback_switches_back_then_a_promoted_one_stays(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    await create_and_release(platform_file, tmp_path, SPEC)  # nothing live before: rolled in place
    first = image_of(sandbox, "azure")
    assert "nothing runs in staging yet" in json.dumps(await status_of(platform_file))
    project = gitlab_client(sandbox).projects.get("demo/azure")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "v2.txt", "content": "2"}]})

    code, out, err = await kepler(platform_file, "release", "azure", "--env", "staging",
                                  "--ref", "main", "-o", "json")
    assert code == 0, out + err
    await wait_for(lambda: in_window(platform_file), 120, "the rollback window", interval=0.2)
    green = image_of(sandbox, "azure-canary")
    assert green != first and image_of(sandbox, "azure") == first  # the old one stays warm
    assert apps(sandbox).read_namespaced_deployment("azure", NS).spec.replicas == 2
    assert current_weights({"spec": {"http": routes_of(sandbox, NS, "azure")}})[:2] == (0, 100)

    code, out, err = await kepler(platform_file, "rollback", "azure", "--env", "staging",
                                  "--reason", "checkout errors", "--watch", "-o", "json")
    assert code == 0, out + err
    assert json.loads(out)["outcome"] == "rolled_back"
    status = await wait_for_outcome(platform_file, "azure", "staging")
    assert status["outcome"] == "rolled_back" and "switched back by" in status["error"], status
    assert current_weights({"spec": {"http": routes_of(sandbox, NS, "azure")}})[:2] == (100, 0)
    assert image_of(sandbox, "azure") == first  # no rollout: the same pods take the traffic
    assert apps(sandbox).read_namespaced_deployment("azure-canary", NS).spec.replicas == 0

    code, out, err = await kepler(platform_file, "release", "azure", "--env", "staging",
                                  "--ref", "main", "-o", "json")
    assert code == 0, out + err
    await wait_for(lambda: in_window(platform_file), 120, "the rollback window", interval=0.2)
    code, out, err = await kepler(platform_file, "promote", "azure", "--env", "staging")
    assert code == 0, out + err
    status = await wait_for_outcome(platform_file, "azure", "staging")
    assert status["outcome"] == "succeeded", status
    assert image_of(sandbox, "azure") == green  # the primary took the new version
    assert current_weights({"spec": {"http": routes_of(sandbox, NS, "azure")}})[:2] == (100, 0)
    assert apps(sandbox).read_namespaced_deployment("azure-canary", NS).spec.replicas == 0
    annotations = apps(sandbox).read_namespaced_deployment("azure", NS).metadata.annotations
    assert green in annotations[naming.HISTORY]  # recorded as any release (kepler rollback's)


async def test_blue_green_asked_for_a_cronjob_changes_nothing(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    spec = {"name": "nocturne", "team": "t", "type": "cronjob", "schedule": {"cron": "0 3 * * *"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(platform_file, "release", "nocturne", "--env", "staging",
                                  "--ref", "main", "--strategy", "blue-green", "--watch")
    assert code == 2 and "blue-green is for type deployment" in out + err, out + err
    assert [d.metadata.name for d in apps(sandbox).list_namespaced_deployment(
        "nocturne-staging").items] == []


async def test_a_firing_alert_in_the_window_switches_back(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    """The alert receiver finds the blue-green (it runs as a Canary) and sends it its signed
    abort: in the rollback window, that is a switch-back, outcome rolled_back."""
    spec = {**SPEC, "name": "egret"}
    await create_and_release(platform_file, tmp_path, spec)
    ns = "egret-staging"
    first = apps(sandbox).read_namespaced_deployment("egret", ns).spec.template.spec.containers[0].image
    project = gitlab_client(sandbox).projects.get("demo/egret")
    project.commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "create", "file_path": "v2.txt", "content": "2"}]})
    code, out, err = await kepler(platform_file, "release", "egret", "--env", "staging",
                                  "--ref", "main", "-o", "json")
    assert code == 0, out + err
    await wait_for(lambda: in_window(platform_file, "egret"), 120, "the rollback window",
                   interval=0.2)
    platform = load_platform(platform_file)
    platform = platform.model_copy(update={"alerts": AlertsConfig.model_validate({
        **platform.alerts.model_dump(),
        "rollback": [{"match": {"severity": "critical"}, "envs": ["staging"]}]})})
    app = alerts.create_app(platform, Secrets(alertmanager_token=SecretStr("t0k")),
                            client=dev_env.client, wait_for_outcome=20)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://kepler-alerts") as http:
        r = await http.post("/alertmanager", json=payload(kepler_service="egret"),
                            headers={"Authorization": "Bearer t0k"})
    assert r.status_code == 200 and r.json()["results"][0]["action"] == "canary_aborted", r.text
    status = await wait_for_outcome(platform_file, "egret", "staging")
    assert status["outcome"] == "rolled_back" and "switched back by alerts" in status["error"], status
    vs = {"spec": {"http": routes_of(sandbox, ns, "egret")}}
    assert current_weights(vs)[:2] == (100, 0)
    assert apps(sandbox).read_namespaced_deployment("egret", ns).spec.template.spec.containers[0].image == first
