"""Decommission as a user runs it: `kepler decommission`, `reject`, `restore`, `approve`,
`service list` and `service show` through the CLI, on the real dev server, a real worker
and the sandbox. A reject changes nothing; a restore during the soak puts back routes,
replicas and release schedules exactly; an approved decommission deletes what Kepler
created and nothing else (a namespace that was there before, with its volume, stays; the
namespace Kepler made stays too, empty, as decommission.delete_namespaces is off by default).

Its own worker: the platform file allows a 1 s soak (decommission.min_soak), so phase 2
runs within the test instead of after the default minute."""

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
from tests.workers import worker_with
from tests.e2e.test_release import _poll, apps, core, gitlab_client, kepler

pytestmark = pytest.mark.e2e
QUEUE = "kepler-e2e-decommission"


@pytest.fixture
async def short_soak(sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> AsyncIterator[Path]:
    """A platform file whose decommissions may soak 1 s, and a worker reading it."""
    async with worker_with(sandbox, dev_env, tmp_path, QUEUE,
                           lambda config: config.update(decommission={"min_soak": "1s"})) as path:
        yield path


async def schedules(dev_env: Any, service: str) -> dict[str, tuple[bool, str]]:
    found = {}
    for env in ("staging", "prod"):
        try:
            desc = await dev_env.client.get_schedule_handle(f"release-{service}@{env}").describe()
        except Exception:  # noqa: BLE001 - gone
            continue
        found[env] = (desc.schedule.state.paused, desc.schedule.state.note)
    return found


async def test_reject_restore_and_decommission_through_the_cli(
        sandbox: Sandbox, short_soak: Path, dev_env: Any, tmp_path: Path) -> None:
    cfg, namespaces = short_soak, ["retire-staging", "retire-prod"]
    # prod's namespace was there before Kepler, holding a volume somebody else made
    core(sandbox).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="retire-prod")))
    core(sandbox).create_namespaced_persistent_volume_claim("retire-prod", k8s.V1PersistentVolumeClaim(
        metadata=k8s.V1ObjectMeta(name="data"), spec=k8s.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": "1Gi"}))))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "retire", "team": "t", "replicas": 2}))
    code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(cfg, "release", "retire", "--env", "staging", "--ref", "main", "--watch")
    assert code == 0, out + err
    for env in ("staging", "prod"):
        code, out, err = await kepler(cfg, "schedule", "release", "retire", "--env", env,
                                      "--ref", "main", "--cron", "0 2 * * *")
        assert code == 0, out + err
    await dev_env.client.get_schedule_handle("release-retire@prod").pause(note="frozen by ops")

    code, out, _ = await kepler(cfg, "service", "list", "-o", "json")
    assert "retire" in json.loads(out)
    code, out, _ = await kepler(cfg, "service", "show", "retire", "-o", "json")
    shown = json.loads(out)
    assert code == 0 and shown["staging"]["operation"] == "release"
    assert shown["staging"]["outcome"] == "succeeded" and shown["all"]["operation"] == "create"
    before, schedules_before = world.snapshot(sandbox, namespaces), await schedules(dev_env, "retire")
    assert schedules_before == {"staging": (False, "created by carol: scheduled: 0 2 * * *"),
                                "prod": (True, "frozen by ops")}

    async def decommission(soak: str) -> None:
        code, out, err = await kepler(cfg, "decommission", "retire", "--soak", soak,
                                      "--reason", "replaced by shop2")
        assert code == 0, out + err
        await _poll(cfg, "retire", "all", lambda s: s.get("stage") == "awaiting approval", "approval")

    # 1. rejected: nothing changed
    await decommission("10m")
    code, out, err = await kepler(cfg, "reject", "retire", "--env", "all", "--comment", "still used",
                                  user="alice")
    assert code == 0 and "rejected" in out, out + err
    status = await _poll(cfg, "retire", "all", lambda s: s.get("stage") == "done", "the end")
    assert status["outcome"] == "rejected"
    assert world.differences(before, world.snapshot(sandbox, namespaces)) == []
    assert await schedules(dev_env, "retire") == schedules_before

    # 2. approved, then restored during the soak: routes, replicas and schedules back exactly
    await decommission("10m")
    code, out, err = await kepler(cfg, "restore", "retire")
    assert code == 3 and "nothing to restore" in err, out + err  # not soaking yet
    code, out, err = await kepler(cfg, "approve", "retire", "--env", "all", user="alice")
    assert code == 0, out + err
    await _poll(cfg, "retire", "all", lambda s: s.get("stage") == "soaking", "the soak")
    assert apps(sandbox).read_namespaced_deployment("retire", "retire-staging").spec.replicas == 0
    paused = await schedules(dev_env, "retire")
    assert paused["staging"][0] and paused["staging"][1].startswith("paused by decommission retire@all")
    assert paused["prod"] == (True, "frozen by ops")
    code, out, err = await kepler(cfg, "restore", "retire", user="mallory")
    assert code == 3 and "mallory may not restore retire" in err
    code, out, err = await kepler(cfg, "restore", "retire", "--reason", "still used")
    assert code == 0 and "restored retire" in out, out + err
    assert world.differences(before, world.snapshot(sandbox, namespaces)) == []
    assert await schedules(dev_env, "retire") == {"staging": (False, "unpaused: " + paused["staging"][1]),
                                                  "prod": (True, "frozen by ops")}
    status = json.loads((await kepler(cfg, "status", "retire", "--env", "all", "-o", "json"))[1])
    assert status["outcome"] == "restored" and "release schedules resumed" in status["undone"]

    # 3. approved and soaked: Kepler's objects, schedules and job go; the project is archived;
    # the namespace that was there before stays, with its volume; the one Kepler made stays
    # empty (decommission.delete_namespaces is off), and the status notes say so
    await decommission("1s")
    code, out, err = await kepler(cfg, "approve", "retire", "--env", "all", user="bob")
    assert code == 0, out + err
    status = await _poll(cfg, "retire", "all", lambda s: s.get("stage") == "done", "the end", 120)
    assert status["outcome"] == "succeeded", status
    assert core(sandbox).read_namespace("retire-staging")
    assert sorted(world.snapshot(sandbox, ["retire-staging"])) == [
        "Namespace retire-staging/retire-staging"]  # everything Kepler created in it is gone
    assert ("kept: Namespace retire-prod kept (not created by Kepler), Namespace retire-staging "
            "kept (decommission.delete_namespaces is off)") in status["notes"], status["notes"]
    assert core(sandbox).read_namespaced_persistent_volume_claim("data", "retire-prod")
    assert core(sandbox).read_namespace("retire-prod")
    left = world.snapshot(sandbox, ["retire-prod"])
    assert sorted(left) == ["Namespace retire-prod/retire-prod", "PersistentVolumeClaim retire-prod/data"]
    assert await schedules(dev_env, "retire") == {}
    s = sandbox.settings
    assert not jenkins.Jenkins(sandbox.urls["jenkins"], username=s.jenkins_user,
                               password=s.jenkins_token).job_exists("kepler-retire")
    assert gitlab_client(sandbox).projects.get("demo/retire").archived
    code, out, _ = await kepler(cfg, "service", "list", "-o", "json")
    assert "retire" not in json.loads(out)  # decommissioned services are not listed
    code, out, _ = await kepler(cfg, "service", "show", "retire", "-o", "json")
    assert json.loads(out)["all"]["operation"] == "decommission"

