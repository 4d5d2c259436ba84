"""Release verification end to end: an environment with `bake_time` and
`verify_with_prometheus`, the CLI, the real dev server and worker, the sandbox and the
real Prometheus (Debian's) scraping it. With traffic, a healthy release passes and one
that answers 50 % errors is rolled back; without traffic (a sandbox whose Services get
no requests), `verify_no_data` decides: fail rolls back, skip passes with a note."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from sandbox.serve import Sandbox
from tests import world
from tests.e2e.test_release import apps, gitlab_client, kepler
from tests.helpers import real_prometheus, sandbox_fixture
from tests.workers import worker_with

pytestmark = pytest.mark.e2e
quiet_box = sandbox_fixture("quiet", traffic_rps=0)  # Services get no requests at all


def prometheus_for(box: Sandbox, home: Path) -> Iterator[str]:
    with real_prometheus(box.urls["kubernetes"].removeprefix("http://"), home) as url:
        yield url


@pytest.fixture(scope="module")
def busy_prometheus(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from prometheus_for(sandbox, tmp_path_factory.mktemp("prometheus-verify"))


@pytest.fixture(scope="module")
def quiet_prometheus(quiet_box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from prometheus_for(quiet_box, tmp_path_factory.mktemp("prometheus-quiet"))


def verifying(prometheus: str, no_data: str) -> Any:
    def change(config: dict[str, Any]) -> None:
        config["prometheus"] = {"url": prometheus}
        config["environments"]["staging"].update(bake_time="4s", verify_with_prometheus=True,
                                                 verify_no_data=no_data)
    return change


async def create_and_release(cfg: Path, service: str, tmp_path: Path) -> tuple[int, str, str]:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": service, "team": "t", "replicas": 1}))
    code, out, err = await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch")
    assert code == 0, out + err
    return await kepler(cfg, "release", service, "--env", "staging", "--ref", "main", "--watch")


async def status_of(cfg: Path, service: str) -> dict[str, Any]:
    return json.loads((await kepler(cfg, "status", service, "--env", "staging", "-o", "json"))[1])


async def test_with_traffic_a_healthy_release_passes_and_an_erroring_one_is_rolled_back(
        sandbox: Sandbox, busy_prometheus: str, dev_env: Any, tmp_path: Path) -> None:
    async with worker_with(sandbox, dev_env, tmp_path, "kepler-e2e-verify",
                           verifying(busy_prometheus, "fail")) as cfg:
        code, out, err = await create_and_release(cfg, "tally", tmp_path)
        assert code == 0, out + err
        status = await status_of(cfg, "tally")
        verify = next(s for s in status["steps"] if s["name"] == "verify")
        assert verify["outcome"] == "done" and status["outcome"] == "succeeded"
        before = world.snapshot(sandbox, ["tally-staging"])
        gitlab_client(sandbox).projects.get("demo/tally").commits.create({
            "branch": "main", "commit_message": "v2: half the answers are 500s", "actions": [
                {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "error_rate: 0.5\n"}]})
        code, out, err = await kepler(cfg, "release", "tally", "--env", "staging", "--ref", "main", "--watch")
        assert code == 1, out + err
        assert "request success rate" in err and "< 99.0%" in err
        assert world.differences(before, world.snapshot(sandbox, ["tally-staging"])) == []
        assert (await status_of(cfg, "tally"))["outcome"] == "rolled_back"


@pytest.mark.parametrize("policy", ["fail", "skip"])
async def test_without_traffic_the_no_data_policy_decides(
        quiet_box: Sandbox, quiet_prometheus: str, dev_env: Any, tmp_path: Path, policy: str) -> None:
    service = f"hush-{policy}"
    async with worker_with(quiet_box, dev_env, tmp_path, f"kepler-e2e-quiet-{policy}",
                           verifying(quiet_prometheus, policy)) as cfg:
        code, out, err = await create_and_release(cfg, service, tmp_path)
        status = await status_of(cfg, service)
        deploy = apps(quiet_box).read_namespaced_deployment(service, f"{service}-staging")
        image = deploy.spec.template.spec.containers[0].image
    if policy == "fail":
        assert code == 1, out + err
        assert "no traffic observed" in err and "verify_no_data policy is fail" in err
        assert status["outcome"] == "rolled_back" and "@sha256:" not in image  # back to no release
    else:
        assert code == 0, out + err
        assert status["outcome"] == "succeeded" and "@sha256:" in image
        assert any("passed by staging's verify_no_data policy (skip)" in n for n in status["notes"])
