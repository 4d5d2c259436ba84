"""The real Kubernetes control plane (sandbox/cluster), one per test session, for tests marked realk8s."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def _require_built() -> None:
    from sandbox.cluster import binaries_dir, cache_dir

    if binaries_dir() is None:
        reason = f"the real control plane is not built in {cache_dir()} (run `make cluster`)"
        if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
            pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RealCluster"]:  # noqa: F821
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from `make cluster`,
    on free loopback ports. Skips when they are not built, except in CI (KEPLER_REQUIRE_REAL=1),
    where it fails."""
    from sandbox.cluster import RealCluster

    _require_built()
    with RealCluster(tmp_path_factory.mktemp("real-k8s")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sandbox_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RealCluster"]:  # noqa: F821
    """Another real control plane, whose kwok plays Kepler's pod stages (sandbox/cluster/stages.yaml):
    its pods wait in ContainerCreating until a sandbox bridge (SandboxSettings.real_cluster) marks
    them with what their images do. Skips or fails like `real_cluster`."""
    from sandbox.cluster import RealCluster

    _require_built()
    with RealCluster(tmp_path_factory.mktemp("real-k8s-sandbox"), stages="sandbox") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def cluster_binaries() -> "Path":  # noqa: F821
    """The directory of the built control plane (for tests that start their own); skips or fails
    like `real_cluster` when it is not built."""
    from sandbox.cluster import binaries_dir

    _require_built()
    path = binaries_dir()
    assert path is not None
    return path
