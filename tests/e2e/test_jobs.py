"""End to end, as a user: cronjob services with volumes, `kepler job run`, `kepler logs`,
through the CLI, the real dev server and worker, and the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from tests.helpers import keep_history
from tests.e2e.test_release import core, gitlab_client, kepler, wait_for_outcome

pytestmark = pytest.mark.e2e


def batch(sandbox: Sandbox) -> k8s.BatchV1Api:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    return k8s.BatchV1Api(k8s.ApiClient(conf))


def jobs(sandbox: Sandbox, ns: str) -> dict[str, Any]:
    return {j.metadata.name: j for j in batch(sandbox).list_namespaced_job(ns).items}


def job_done(j: Any) -> str:
    return next((c.type for c in j.status.conditions or [] if c.type in ("Complete", "Failed")), "")


async def test_cronjob_service_with_volumes_release_run_and_logs(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    spec = {"name": "nightly", "team": "data", "type": "cronjob",
            "schedule": {"cron": "0 3 * * *", "concurrency_policy": "Forbid"},
            "config_files": {"job.conf": "mode=v1\n"},
            "volumes": [{"claim": "reports", "mount_path": "/data"},
                        {"claim": "archive", "mount_path": "/archive", "read_only": True}]}
    path = tmp_path / "spec.yaml"

    # bad specs are refused before anything happens
    for bad, message in ((dict(spec, volumes=[{"claim": "reports", "mount_path": "/etc"}]),
                          "must not be a system path"),
                         (dict(spec, volumes=[{"claim": "r", "mount_path": "/data/../var/run/secrets"}]),
                          "normalised path"),
                         (dict(spec, schedule={"cron": "every day"}), "5 fields"),
                         ({k: v for k, v in spec.items() if k != "schedule"}, "schedule is required")):
        path.write_text(yaml.safe_dump(bad))
        code, out, err = await kepler(platform_file, "service", "create", "-f", str(path))
        assert code == 2 and message in err, (code, out, err)

    # the claims must exist in each environment's namespace: a clear, named refusal
    path.write_text(yaml.safe_dump(spec))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(path), "--watch")
    assert code == 1 and "PersistentVolumeClaim 'reports'" in err, (out, err)
    assert "'archive'" in err and "namespace 'nightly-prod'" in err
    assert not _ns_exists(sandbox, "nightly-staging") and not _ns_exists(sandbox, "nightly-prod")
    projects = gitlab_client(sandbox).projects.list(search="nightly")
    assert not [p for p in projects if p.path == "nightly"]  # refused before GitLab too

    for env in ("staging", "prod"):
        ns = f"nightly-{env}"
        core(sandbox).create_namespace({"metadata": {"name": ns}})
        for claim in ("reports", "archive"):
            core(sandbox).create_namespaced_persistent_volume_claim(ns, {
                "metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}})
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(path), "--watch")
    assert code == 0, out + err
    cj = batch(sandbox).read_namespaced_cron_job("nightly", "nightly-staging")
    assert cj.spec.schedule == "0 3 * * *" and cj.spec.concurrency_policy == "Forbid"
    assert cj.spec.suspend  # nothing runs before the first release
    pod = cj.spec.job_template.spec.template.spec
    mounts = {m.mount_path: m.read_only for m in pod.containers[0].volume_mounts}
    assert mounts["/data"] is False and mounts["/archive"] is True
    claims = {v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
    assert claims == {"reports", "archive"}
    with pytest.raises(k8s.ApiException):  # no Deployment, no Service
        k8s.AppsV1Api(batch(sandbox).api_client).read_namespaced_deployment("nightly", "nightly-staging")

    # release: the pod template by digest, then one verification run that must succeed
    code, out, err = await kepler(platform_file, "release", "nightly", "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    image = json.loads(out)["report"]["image"]
    cj = batch(sandbox).read_namespaced_cron_job("nightly", "nightly-staging")
    assert cj.spec.job_template.spec.template.spec.containers[0].image == image and "@sha256:" in image
    assert not cj.spec.suspend
    verify = [j for n, j in jobs(sandbox, "nightly-staging").items() if "-verify-" in n]
    assert len(verify) == 1 and job_done(verify[0]) == "Complete"

    # a bad version: its run fails, so image and config go back
    project = gitlab_client(sandbox).projects.get("demo/nightly")
    project.commits.create({"branch": "main", "commit_message": "v2: fails", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**spec, "config_files": {"job.conf": "mode=v2\n"}})}]})
    project.tags.create({"tag_name": "v2", "ref": "main"})
    code, out, err = await kepler(platform_file, "release", "nightly", "--env", "staging",
                                  "--ref", "v2", "--watch")
    assert code == 1 and "failed" in err and "restore" in err, out + err
    cj = batch(sandbox).read_namespaced_cron_job("nightly", "nightly-staging")
    assert cj.spec.job_template.spec.template.spec.containers[0].image == image
    cm = core(sandbox).read_namespaced_config_map("nightly-config", "nightly-staging")
    assert cm.data == {"job.conf": "mode=v1\n"}
    status = json.loads((await kepler(platform_file, "status", "nightly", "--env", "staging",
                                      "-o", "json"))[1])
    assert status["outcome"] == "rolled_back"

    # run it now, under the lock, recorded with who asked
    code, out, err = await kepler(platform_file, "job", "run", "nightly", "--env", "staging",
                                  "--reason", "backfill", "--watch", "-o", "json")
    assert code == 0, out + err
    report = json.loads(out)["report"]
    assert report["outcome"] == "succeeded" and report["job"].startswith("nightly-run-")
    run = jobs(sandbox, "nightly-staging")[report["job"]]
    assert run.metadata.annotations["kepler.dev/requested-by"] == "carol"
    assert run.spec.template.spec.containers[0].image == image
    await keep_history(dev_env.client, "job", "nightly@staging")
    code, out, err = await kepler(platform_file, "history", "nightly", "--env", "staging", "-o", "json")
    assert json.loads(out)[0]["operation"] == "job"

    for args, expected in ((("job", "run", "nightly", "--env", "qa"), 2),
                           (("job", "run", "Nightly!", "--env", "staging"), 2)):
        before = set(jobs(sandbox, "nightly-staging"))
        code, out, err = await kepler(platform_file, *args)
        assert code == expected, (args, out, err)
        assert set(jobs(sandbox, "nightly-staging")) == before
    code, out, err = await kepler(platform_file, "job", "run", "nightly", "--env", "prod", "--watch")
    assert code == 1 and "never been released" in err

    # logs: the run's pod, through the Kubernetes API
    code, out, err = await kepler(platform_file, "logs", "nightly", "--env", "staging", "--since", "10m")
    assert code == 0, err
    assert "run finished: ok" in out and report["job"] in out
    code, out, err = await kepler(platform_file, "logs", "nightly", "--env", "staging", "--follow",
                                  "--tail", "1", "-o", "json")
    assert code == 0, err  # finished pods: the stream ends by itself
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert lines and all(set(ln) == {"pod", "line"} for ln in lines)
    for args, expected, message in (
            (("--since", "soon"), 2, "--since"), (("--version", "beta"), 2, "stable or canary"),
            (("--version", "canary"), 1, "no canary pods")):
        code, out, err = await kepler(platform_file, "logs", "nightly", "--env", "staging", *args)
        assert code == expected and message in err, (args, out, err)

    # a good v3 (new config), then rollback --to previous: v1's image and config again
    project.commits.create({"branch": "main", "commit_message": "v3", "actions": [
        {"action": "delete", "file_path": "kepler-sandbox.yaml"},
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**spec, "config_files": {"job.conf": "mode=v3\n"}})}]})
    code, out, err = await kepler(platform_file, "release", "nightly", "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    assert json.loads(out)["report"]["image"] != image
    code, out, err = await kepler(platform_file, "rollback", "nightly", "--env", "staging",
                                  "--to", "previous", "--watch", "-o", "json")
    assert code == 0, out + err  # a cronjob service rolls back too (it was refused)
    cj = batch(sandbox).read_namespaced_cron_job("nightly", "nightly-staging")
    assert cj.spec.job_template.spec.template.spec.containers[0].image == image
    cm = core(sandbox).read_namespaced_config_map("nightly-config", "nightly-staging")
    assert cm.data == {"job.conf": "mode=v1\n"}


def _ns_exists(sandbox: Sandbox, ns: str) -> bool:
    try:
        core(sandbox).read_namespace(ns)
        return True
    except k8s.ApiException:
        return False


async def test_logs_of_a_serving_deployment_follow(sandbox: Sandbox, platform_file: Path,
                                                  e2e_worker: Any, tmp_path: Path) -> None:
    import asyncio
    import os
    import sys

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(
        {"name": "talker", "team": "t", "replicas": 1}))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch"))[0] == 0
    assert (await kepler(platform_file, "release", "talker", "--env", "staging", "--ref", "main",
                         "--watch"))[0] == 0
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kepler"), "logs", "talker", "--env", "staging",
        "--follow", "--since", "1s", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KEPLER_CONFIG": str(platform_file), "KEPLER_USER": "carol"})
    seen: list[str] = []
    try:
        async def requests() -> None:
            while sum('"GET ' in ln for ln in seen) < 3:
                line = await proc.stdout.readline()
                assert line, "the follow stream ended"
                seen.append(line.decode())

        await asyncio.wait_for(requests(), 30)
    finally:
        proc.terminate()
        await proc.wait()
    assert all(ln.startswith("talker-") for ln in seen)  # each line names its pod
    assert any('" 200 ' in ln for ln in seen)


async def test_a_failed_train_puts_its_cronjob_member_back(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    """Wave 1 releases a cronjob service, wave 2 a service whose new build crashes: the
    train rolls back, and the CronJob's image and config are what they were before."""
    ticker = {"name": "ticker", "team": "data", "type": "cronjob", "schedule": {"cron": "0 4 * * *"},
              "config_files": {"job.conf": "mode=v1\n"}}
    crashy = {"name": "crashy", "team": "data", "replicas": 1}
    for spec in (ticker, crashy):
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                      "--watch")
        assert code == 0, out + err
        code, out, err = await kepler(platform_file, "release", spec["name"], "--env", "staging",
                                      "--ref", "main", "--watch")
        assert code == 0, out + err
    before = batch(sandbox).read_namespaced_cron_job("ticker", "ticker-staging").spec
    projects = gitlab_client(sandbox).projects
    projects.get("demo/ticker").commits.create({"branch": "main", "commit_message": "v2", "actions": [
        {"action": "update", "file_path": ".kepler/service.yaml",
         "content": yaml.safe_dump({**ticker, "config_files": {"job.conf": "mode=v2\n"}})}]})
    projects.get("demo/crashy").commits.create({"branch": "main", "commit_message": "v2: crashes",
                                                "actions": [{"action": "create", "file_path": "kepler-sandbox.yaml",
                                                             "content": "crash: true\n"}]})
    train = {"name": "morning", "env": "staging", "members": [
        {"service": "ticker", "ref": "main"}, {"service": "crashy", "ref": "main", "depends_on": ["ticker"]}]}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    code, out, err = await kepler(platform_file, "train", "-f", str(tmp_path / "train.yaml"), "--watch",
                                  "-o", "json")
    assert code == 1, out + err
    after = batch(sandbox).read_namespaced_cron_job("ticker", "ticker-staging").spec
    assert after.job_template.spec.template.spec.containers[0].image == \
        before.job_template.spec.template.spec.containers[0].image
    assert core(sandbox).read_namespaced_config_map("ticker-config", "ticker-staging").data == {
        "job.conf": "mode=v1\n"}
    status = json.loads((await kepler(platform_file, "status", "train-morning", "--env", "staging",
                                      "-o", "json"))[1])
    assert status["outcome"] == "rolled_back", status
    assert any(u.startswith("ticker: restore") for u in status["undone"])
    await keep_history(dev_env.client, "train-with-a-cronjob-member", "train-morning@staging")
