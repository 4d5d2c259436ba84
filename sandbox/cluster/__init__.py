"""The real Kubernetes control plane for the test tier (tests marked realk8s).

`make cluster` (sandbox/cluster/build.sh) builds, once, from the versions pinned in
sandbox/cluster/versions.env: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl
from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, and kwok, which plays the nodes and
the pods' lifecycle; plus the Istio CRDs from istio.io/api. They are cached outside the
repository (versions.cache_dir()). `RealCluster` starts them on free loopback ports.

The sandbox world on it: `RealCluster(stages="sandbox")` runs Kepler's kwok pod stages
(stages.yaml), and a Sandbox with `SandboxSettings.real_cluster` set to its kubeconfig runs the
bridge (bridge.py) in place of the Kubernetes stand-in. `RealWorld` starts both in one call;
`python -m sandbox --start-real-cluster` does the same for `kepler dev up`.

This package imports nothing from kepler/, workflows/, activities/ or starter/.
"""

from __future__ import annotations

from pathlib import Path

from .procs import ClusterStartError
from .real import RealCluster
from .realworld import RealWorld
from .versions import cache_dir, is_built, versions

__all__ = ["ClusterStartError", "RealCluster", "RealWorld", "binaries_dir", "cache_dir", "versions"]


def binaries_dir() -> Path | None:
    """The directory holding the built binaries, or None when `make cluster` has not built them
    (for exactly the pinned versions)."""
    return cache_dir() / "bin" if is_built() else None
