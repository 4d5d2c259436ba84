"""End to end, as a user: the `kepler` CLI, the real dev server, the real worker and
activities, and the sandbox's GitLab, Jenkins, registry and Kubernetes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import gitlab
import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from tests import world
from tests.helpers import sandbox_fixture
from tests.workers import worker_with

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


async def kepler(platform_file: Path, *args: str, user: str = "carol") -> tuple[int, str, str]:
    """Run the CLI without blocking the event loop the in-process worker runs on."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kepler"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KEPLER_CONFIG": str(platform_file), "KEPLER_USER": user,
             "COLUMNS": "200"})
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode(), err.decode()


def apps(sandbox: Sandbox) -> k8s.AppsV1Api:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    return k8s.AppsV1Api(k8s.ApiClient(conf))


def core(sandbox: Sandbox) -> k8s.CoreV1Api:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    return k8s.CoreV1Api(k8s.ApiClient(conf))


def gitlab_client(sandbox: Sandbox) -> gitlab.Gitlab:
    return gitlab.Gitlab(sandbox.urls["gitlab"], private_token=sandbox.settings.gitlab_token)


async def test_create_release_approve_bad_release_and_rollback(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    spec = {"name": "checkout", "team": "payments", "template": "python", "replicas": 2,
            "owners": ["alice"], "config_files": {"app.conf": "mode=v1\n"},
            "environments": {"prod": {"replicas": 3}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))

    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch")
    assert code == 0, out + err
    deploy = apps(sandbox).read_namespaced_deployment("checkout", "checkout-staging")
    assert deploy.spec.replicas == 0  # nothing runs until the first release
    assert core(sandbox).read_namespace("checkout-prod").metadata.labels["istio-injection"] == "enabled"
    project = gitlab_client(sandbox).projects.get("demo/checkout")
    assert "name: checkout" in project.files.get(".kepler/service.yaml", ref="main").decode().decode()

    code, out, err = await kepler(platform_file, "release", "checkout", "--env", "staging",
                                  "--ref", "main", "--watch", "--output", "json")
    assert code == 0, out + err
    report = json.loads(out)["report"]
    assert report["outcome"] == "succeeded" and "@sha256:" in report["image"]
    deploy = apps(sandbox).read_namespaced_deployment("checkout", "checkout-staging")
    assert deploy.spec.template.spec.containers[0].image == report["image"]
    assert deploy.status.available_replicas == 2
    assert deploy.metadata.annotations["kepler.dev/requested-by"] == "carol"
    v1_image = report["image"]

    # prod needs approval; the requester cannot give it, a listed approver can
    code, out, err = await kepler(platform_file, "release", "checkout", "--env", "prod",
                                  "--ref", "main", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["workflow_id"] == "checkout@prod"
    await wait_for_stage(platform_file, "checkout", "prod", "awaiting approval")
    code, out, err = await kepler(platform_file, "approve", "checkout", "--env", "prod")
    assert code == 3 and "four eyes" in err
    code, out, err = await kepler(platform_file, "release", "checkout", "--env", "prod", "--ref", "main")
    assert code == 3 and "checkout@prod is busy: release" in err and "carol" in err
    code, out, err = await kepler(platform_file, "approve", "checkout", "--env", "prod", user="alice")
    assert code == 0 and "approved" in out
    status = await wait_for_outcome(platform_file, "checkout", "prod")
    assert status["outcome"] == "succeeded"
    assert apps(sandbox).read_namespaced_deployment("checkout", "checkout-prod").status.available_replicas == 3

    # a bad v2: its commit says it crashes, and its config changes; both are undone
    project.commits.create({"branch": "main", "commit_message": "v2: crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**spec, "config_files": {"app.conf": "mode=v2\n"}})}]})
    project.tags.create({"tag_name": "v2", "ref": "main"})
    code, out, err = await kepler(platform_file, "release", "checkout", "--env", "staging",
                                  "--ref", "v2", "--watch")
    assert code == 1, out + err
    assert "CrashLoopBackOff" in err and "restore" in err
    deploy = apps(sandbox).read_namespaced_deployment("checkout", "checkout-staging")
    assert deploy.spec.template.spec.containers[0].image == v1_image
    cm = core(sandbox).read_namespaced_config_map("checkout-config", "checkout-staging")
    assert cm.data == {"app.conf": "mode=v1\n"}
    status = json.loads((await kepler(platform_file, "status", "checkout", "--env", "staging",
                                      "-o", "json"))[1])
    assert status["outcome"] == "rolled_back"

    code, out, err = await kepler(platform_file, "history", "checkout", "-o", "json")
    rows = json.loads(out)
    assert [r["operation"] for r in rows if r["env"] == "staging"][:2] == ["release", "release"]

    code, out, err = await kepler(platform_file, "release", "checkout", "--env", "qa", "--ref", "main")
    assert code == 2 and "unknown environment 'qa'" in err
    code, out, err = await kepler(platform_file, "release", "Checkout!", "--env", "staging", "--ref", "main")
    assert code == 2 and "service" in err and "DNS-1035" in err


async def wait_for_stage(platform_file: Path, service: str, env: str, stage: str) -> dict:
    return await _poll(platform_file, service, env, lambda s: s.get("stage") == stage, stage)


async def wait_for_outcome(platform_file: Path, service: str, env: str) -> dict:
    return await _poll(platform_file, service, env, lambda s: s.get("outcome") not in (None, "running"),
                       "an outcome")


async def _poll(platform_file: Path, service: str, env: str, check: Any, what: str,
                timeout: float = 120) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    last: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        code, out, _ = await kepler(platform_file, "status", service, "--env", env, "-o", "json")
        if out.strip():
            last = json.loads(out)
            if check(last):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{service}@{env} never reached {what}; last status {last}")


async def test_a_release_over_the_environments_bounds_exits_2_and_changes_nothing(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """prod allows 10 replicas; the spec asks 50 there: the release is refused before any
    build, approval or change, with exit 2 naming the field, the value and the bound."""
    spec = {"name": "bigshop", "team": "t", "environments": {"prod": {"replicas": 50}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(platform_file, "service", "create", "-f",
                                  str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    assert (await kepler(platform_file, "release", "bigshop", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0  # prod takes only what staging runs
    before = apps(sandbox).read_namespaced_deployment("bigshop", "bigshop-prod")
    whole = world.snapshot(sandbox, ["bigshop-prod"])
    code, out, err = await kepler(platform_file, "release", "bigshop", "--env", "prod",
                                  "--ref", "main", "--watch")
    assert code == 2, out + err
    assert world.differences(whole, world.snapshot(sandbox, ["bigshop-prod"])) == []
    assert "replicas: 50 is over this environment's maximum of 10" in err
    after = apps(sandbox).read_namespaced_deployment("bigshop", "bigshop-prod")
    assert after.spec == before.spec and after.metadata.generation == before.metadata.generation
    status = json.loads((await kepler(platform_file, "status", "bigshop", "--env", "prod",
                                      "-o", "json"))[1])
    assert status["outcome"] == "failed" and status["bad_input"]
    assert not any(s["name"] in ("build", "awaiting approval") for s in status["steps"])


async def test_rollback_to_previous_after_a_rolled_back_release_is_the_last_healthy_one(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """Release A, release B, release C that crashes (rolled back to B), then `rollback --to
    previous`: A, the version live and healthy before B, never the crashed C (B's restore
    made a new ReplicaSet revision, so the ReplicaSet history alone pointed at C)."""
    spec = {"name": "ledger2", "team": "t", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    project = gitlab_client(sandbox).projects.get("demo/ledger2")
    images = {}
    for name, actions in (("A", []), ("B", [{"action": "create", "file_path": "b.txt",
                                              "content": "b\n"}])):
        if actions:
            project.commits.create({"branch": "main", "commit_message": name, "actions": actions})
        code, out, err = await kepler(platform_file, "release", "ledger2", "--env", "staging",
                                      "--ref", "main", "--watch", "-o", "json")
        assert code == 0, out + err
        images[name] = json.loads(out)["report"]["image"]
    project.commits.create({"branch": "main", "commit_message": "C: crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"}]})
    before = world.snapshot(sandbox, ["ledger2-staging"])
    code, out, err = await kepler(platform_file, "release", "ledger2", "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 1 and "CrashLoopBackOff" in err, out + err
    assert world.differences(before, world.snapshot(sandbox, ["ledger2-staging"])) == []
    deploy = apps(sandbox).read_namespaced_deployment("ledger2", "ledger2-staging")
    assert deploy.spec.template.spec.containers[0].image == images["B"]

    code, out, err = await kepler(platform_file, "rollback", "ledger2", "--env", "staging",
                                  "--to", "previous", "--watch", "-o", "json")
    assert code == 0, out + err
    assert json.loads(out)["report"]["image"] == images["A"]
    deploy = apps(sandbox).read_namespaced_deployment("ledger2", "ledger2-staging")
    assert deploy.spec.template.spec.containers[0].image == images["A"]
    history = json.loads(deploy.metadata.annotations["kepler.dev/history"])
    assert [r["image"] for r in history] == [images["A"], images["B"], images["A"]]

    # --to sha256:DIGEST, then --to VERSION (a tag on B's commit): found in the registry
    digest = images["B"].rsplit("@", 1)[1]
    code, out, err = await kepler(platform_file, "rollback", "ledger2", "--env", "staging",
                                  "--to", digest, "--watch", "-o", "json")
    assert code == 0 and json.loads(out)["report"]["image"] == images["B"], out + err
    project.tags.create({"tag_name": "a-version", "ref": history[-1]["commit"]})
    code, out, err = await kepler(platform_file, "rollback", "ledger2", "--env", "staging",
                                  "--to", "a-version", "--watch", "-o", "json")
    assert code == 0 and json.loads(out)["report"]["image"] == images["A"], out + err
    code, out, err = await kepler(platform_file, "rollback", "ledger2", "--env", "staging",
                                  "--to", "sha256:" + "f" * 64, "--watch")
    assert code == 1 and "no image for sha256:ffff" in err, out + err  # never built: refused
    deploy = apps(sandbox).read_namespaced_deployment("ledger2", "ledger2-staging")
    assert deploy.spec.template.spec.containers[0].image == images["A"]


async def test_every_spec_field_takes_effect_on_release_and_rolls_back_with_it(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """port, health_path and the config mount path change on release (they were read and
    dropped); a crashing release puts them back with the image and config."""
    spec = {"name": "shape", "team": "t", "replicas": 1}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    project = gitlab_client(sandbox).projects.get("demo/shape")
    changed = {**spec, "port": 9090, "health_path": "/ready", "config_mount_path": "/etc/shape"}
    project.commits.create({"branch": "main", "commit_message": "new shape", "actions": [
        {"action": "update", "file_path": ".kepler/service.yaml", "content": yaml.safe_dump(changed)}]})
    code, out, err = await kepler(platform_file, "release", "shape", "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 0, out + err

    def shape() -> tuple:
        c = apps(sandbox).read_namespaced_deployment("shape", "shape-staging").spec.template.spec.containers[0]
        return (c.ports[0].container_port, c.readiness_probe.http_get.path,
                c.volume_mounts[0].mount_path)

    assert shape() == (9090, "/ready", "/etc/shape")
    project.commits.create({"branch": "main", "commit_message": "crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**changed, "port": 7070, "health_path": "/live"})}]})
    before = world.snapshot(sandbox, ["shape-staging"])
    code, out, err = await kepler(platform_file, "release", "shape", "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 1 and "CrashLoopBackOff" in err, out + err
    assert world.differences(before, world.snapshot(sandbox, ["shape-staging"])) == []
    assert shape() == (9090, "/ready", "/etc/shape")  # put back with the image and config


async def test_a_first_release_that_crashes_leaves_the_world_as_it_was(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    """Nothing ran before: the undo puts the empty Deployment back exactly, annotations
    included, and the ConfigMap's data."""
    spec = {"name": "firstcrash", "team": "t", "replicas": 1, "config_files": {"a": "1"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    project = gitlab_client(sandbox).projects.get("demo/firstcrash")
    project.commits.create({"branch": "main", "commit_message": "crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**spec, "config_files": {"a": "2"}})}]})
    before = world.snapshot(sandbox, ["firstcrash-staging"])
    code, out, err = await kepler(platform_file, "release", "firstcrash", "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 1 and "CrashLoopBackOff" in err, out + err
    assert world.differences(before, world.snapshot(sandbox, ["firstcrash-staging"])) == []


stalling_box = sandbox_fixture("stall", progress_deadline_scale=0.005)  # 600 s -> 3 s


async def test_a_rollout_that_stops_progressing_is_rolled_back(
        stalling_box: Sandbox, dev_env: Any, tmp_path: Path) -> None:
    """v2's pods run but never pass their readiness probe: the Deployment reports
    ProgressDeadlineExceeded, the release fails naming it, and the world is as before."""
    async with worker_with(stalling_box, dev_env, tmp_path, "kepler-e2e-stall", lambda c: None) as cfg:
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "stall", "team": "t", "replicas": 2}))
        code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch")
        assert code == 0, out + err
        code, out, err = await kepler(cfg, "release", "stall", "--env", "staging", "--ref", "main", "--watch")
        assert code == 0, out + err
        before = world.snapshot(stalling_box, ["stall-staging"])
        gitlab_client(stalling_box).projects.get("demo/stall").commits.create({
            "branch": "main", "commit_message": "v2: never ready", "actions": [
                {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "unready: true\n"}]})
        code, out, err = await kepler(cfg, "release", "stall", "--env", "staging", "--ref", "main", "--watch")
        assert code == 1, out + err
        assert "ProgressDeadlineExceeded" in err and "restore" in err
        assert world.differences(before, world.snapshot(stalling_box, ["stall-staging"])) == []
        deploy = apps(stalling_box).read_namespaced_deployment("stall", "stall-staging")
        assert deploy.status.available_replicas == 2
        status = json.loads((await kepler(cfg, "status", "stall", "--env", "staging", "-o", "json"))[1])
        assert status["outcome"] == "rolled_back"
