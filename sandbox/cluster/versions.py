"""The pinned versions (versions.env, the one place they are written) and where build.sh caches
what it built from them: ${XDG_CACHE_HOME:-~/.cache}/kepler/k8s/<K8S_VERSION>/."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"
BUILD_SCRIPT = HERE / "build.sh"

# what build.sh puts in bin/
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok")
# the keys of versions.env, in the order build.sh writes them into STAMP
STAMP_KEYS = ("K8S_VERSION", "K8S_STAGING_VERSION", "ETCD_VERSION", "KWOK_VERSION", "ISTIO_API_VERSION")


def versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=value lines of versions.env (comments and blank lines skipped)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kepler" / "k8s"


def cache_dir() -> Path:
    """Where build.sh puts this pinned version's build (it may not exist yet)."""
    return cache_root() / versions()["K8S_VERSION"]


def istio_crds_file(root: Path) -> Path:
    return root / "istio" / "customresourcedefinitions.gen.yaml"


def kwok_stages_file(root: Path) -> Path:
    """kwok's default node and pod stages (the ones kwokctl configures), copied by build.sh."""
    return root / "kwok" / "stages.yaml"


def kwok_logs_crd_file(root: Path) -> Path:
    """kwok's Logs CRD, copied by build.sh (kwok --enable-crds=Logs reads pod log files it names)."""
    return root / "kwok" / "logs-crd.yaml"


def built(root: Path, keys: tuple[str, ...], binaries: tuple[str, ...]) -> bool:
    """True when build directory `root` was built from the pinned `keys` (its STAMP) and holds
    every one of `binaries` in bin/, executable (the check of `make cluster`, `make temporal`)."""
    try:
        stamp = versions(root / "STAMP")
    except OSError:
        return False
    pinned = versions()
    if any(stamp.get(key) != pinned.get(key) for key in keys):
        return False
    return all(os.access(root / "bin" / name, os.X_OK) for name in binaries)


def is_built() -> bool:
    """True when the cache holds a complete build of exactly the pinned versions."""
    root = cache_dir()
    if not all(f.is_file() for f in (istio_crds_file(root), kwok_stages_file(root), kwok_logs_crd_file(root))):
        return False
    return built(root, STAMP_KEYS, BINARIES)
