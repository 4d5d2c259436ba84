"""The real Kubernetes control plane (sandbox/cluster), one per test session, for tests marked realk8s."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RealCluster"]:  # noqa: F821
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from `make cluster`,
    on free loopback ports. Skips when they are not built, except in CI (KEPLER_REQUIRE_REAL=1),
    where it fails."""
    from sandbox.cluster import RealCluster, binaries_dir, cache_dir

    if binaries_dir() is None:
        reason = f"the real control plane is not built in {cache_dir()} (run `make cluster`)"
        if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
            pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
        pytest.skip(reason)
    with RealCluster(tmp_path_factory.mktemp("real-k8s")) as cluster:
        yield cluster
