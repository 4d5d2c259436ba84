"""The realk8s tier: the same Kubernetes and Istio contracts against both backends — the
sandbox's stand-in and a real control plane (sandbox/cluster: kube-apiserver, controller
manager, scheduler, etcd and kwok, built by `make cluster`). One parametrised fixture,
`backend`, gives each test a Platform whose environments point at one of them, so every
difference between the two fails a test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from temporalio.testing import ActivityEnvironment

from kepler.settings import Platform, parse_platform
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.conftest import platform_yaml

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # every test of this tier is marked, so `-m realk8s` selects it
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.realk8s)


@dataclass
class Backend:
    name: str  # "standin" | "real"
    platform: Platform
    box: Sandbox  # the registry (and, for the stand-in, the cluster)
    kubeconfig: Path | None = None  # the real cluster's

    def api(self) -> Any:
        """The official Python client, for what a user would check with kubectl."""
        from kubernetes import client, config
        if self.kubeconfig is not None:
            return config.new_client_from_config(config_file=str(self.kubeconfig))
        conf = client.Configuration()
        conf.host = self.box.urls["kubernetes"]
        return client.ApiClient(conf)

    def service(self, prefix: str) -> str:
        """A service name of its own (the real cluster lives for the whole session)."""
        return f"{prefix}{uuid.uuid4().hex[:6]}"


def run(fn: Any, *args: Any) -> Any:
    return ActivityEnvironment().run(fn, *args)


@pytest.fixture(scope="session")
def standin_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    settings = SandboxSettings(state_dir=tmp_path_factory.mktemp("realk8s-standin"),
                               build_seconds=0.1, seconds_per_replica=0.05)
    box = Sandbox(settings).start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def real_world(sandbox_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The sandbox world played on the real cluster: the stand-ins but Kubernetes, and the
    bridge that marks pods from their images' registry labels and feeds the traffic model."""
    from sandbox.cluster.realworld import RealWorld

    settings = SandboxSettings(build_seconds=0.1, seconds_per_replica=0.05)
    with RealWorld(tmp_path_factory.mktemp("realk8s-world"), settings,
                   cluster=sandbox_cluster) as world:
        yield world


def real_platform(box: Sandbox, kubeconfig: Path) -> Platform:
    data = yaml.safe_load(platform_yaml(box.urls, "127.0.0.1:1", "unused"))
    for env in data["environments"].values():
        env["cluster"] = {"kubeconfig": str(kubeconfig), "context": "kepler-real"}
    return parse_platform(yaml.safe_dump(data))


@pytest.fixture(params=["standin", "real"])
def backend(request: pytest.FixtureRequest, standin_box: Sandbox) -> Backend:
    if request.param == "standin":
        return Backend("standin", parse_platform(platform_yaml(standin_box.urls, "127.0.0.1:1",
                                                               "unused")), standin_box)
    world = request.getfixturevalue("real_world")
    return Backend("real", real_platform(world.sandbox, world.kubeconfig), world.sandbox,
                   world.kubeconfig)
