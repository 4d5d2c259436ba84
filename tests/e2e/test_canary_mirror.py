"""A canary's mirror stage end to end: the `kepler` CLI, the real worker, the sandbox's mesh
(its traffic model serves Istio's mirrored copies) and its Prometheus stand-in. A version
that fails under copies of live traffic is rolled back before any live request reaches it;
a service whose requests are not idempotent gets no mirror stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.kubernetes.istio import current_mirror, current_weights
from sandbox.serve import Sandbox
from tests.e2e.test_canary import routes_of
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome
from tests.workers import wait_for

pytestmark = pytest.mark.e2e


async def create_and_release(platform_file: Path, tmp_path: Path, spec: dict[str, Any]) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    for args in (("service", "create", "-f", str(tmp_path / "spec.yaml")),
                 ("release", spec["name"], "--env", "staging", "--ref", "main")):
        code, out, err = await kepler(platform_file, *args, "--watch")
        assert code == 0, out + err


async def test_a_failing_version_is_rolled_back_in_its_mirror_stage_before_live_traffic(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    await create_and_release(platform_file, tmp_path, {"name": "echo", "team": "t", "replicas": 1})
    ns = "echo-staging"
    live_image = apps(sandbox).read_namespaced_deployment("echo", ns).spec.template.spec.containers[0].image
    project = gitlab_client(sandbox).projects.get("demo/echo")
    project.commits.create({"branch": "main", "commit_message": "v2: fails a third of its requests",
                            "actions": [{"action": "create", "file_path": "kepler-sandbox.yaml",
                                         "content": yaml.safe_dump({"error_rate": 0.3})}]})
    project.tags.create({"tag_name": "v2", "ref": "main"})

    code, out, err = await kepler(platform_file, "canary", "echo", "--env", "staging", "--ref", "v2",
                                  "--mirror", "50", "--mirror-for", "30s", "--interval", "10s",
                                  "--failure-limit", "1", "-o", "json")
    assert code == 0, out + err
    seen: set[tuple[int, int, int]] = set()  # (stable, canary, mirror %) of the live route

    async def ended() -> bool:
        try:
            vs = {"spec": {"http": routes_of(sandbox, ns, "echo")}}
            seen.add((*current_weights(vs)[:2], current_mirror(vs)))
        except Exception:  # noqa: BLE001 - not created yet
            pass
        status = json.loads((await kepler(platform_file, "status", "echo", "--env", "staging",
                                          "-o", "json"))[1] or "{}")
        return status.get("outcome") not in (None, "running")

    await wait_for(ended, 120, "the canary's end", interval=0.2)
    status = await wait_for_outcome(platform_file, "echo", "staging")
    assert status["outcome"] == "rolled_back", status
    assert "at the 50% mirror" in status["error"], status["error"]
    assert (100, 0, 50) in seen  # the copies went to the canary ...
    assert all(canary == 0 for _, canary, _ in seen), seen  # ... and never a live request
    vs = {"spec": {"http": routes_of(sandbox, ns, "echo")}}
    assert (current_weights(vs)[:2], current_mirror(vs)) == ((100, 0), 0)
    assert apps(sandbox).read_namespaced_deployment("echo", ns).spec.template.spec.containers[0].image == live_image
    assert apps(sandbox).read_namespaced_deployment("echo-canary", ns).spec.replicas == 0


async def test_no_mirror_stage_for_a_service_that_is_not_idempotent(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    await create_and_release(platform_file, tmp_path, {"name": "payer", "team": "t", "replicas": 1,
                                                       "idempotent": False})
    code, out, err = await kepler(platform_file, "canary", "payer", "--env", "staging", "--ref", "main",
                                  "--mirror", "50", "--mirror-for", "30s", "--interval", "10s",
                                  "--watch", "-o", "json")
    assert code != 0 and "idempotent: false" in out + err, out + err
    names = [d.metadata.name for d in apps(sandbox).list_namespaced_deployment("payer-staging").items]
    assert names == ["payer"]  # no canary Deployment: nothing was changed
    assert not any(r.get("mirror") for r in routes_of(sandbox, "payer-staging", "payer"))
