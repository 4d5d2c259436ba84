"""Where `make temporal` (build.sh) caches the Temporal server it built from the version pinned in
sandbox/cluster/versions.env: ${XDG_CACHE_HOME:-~/.cache}/kepler/temporal/<TEMPORAL_VERSION>/."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.cluster.versions import built, versions

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
BINARIES = ("temporal-server", "temporal-sql-tool", "temporal-ui-server")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kepler" / "temporal"


def cache_dir() -> Path:
    return cache_root() / versions()["TEMPORAL_VERSION"]


def is_built() -> bool:
    """True when the cache holds a complete build of exactly the pinned versions."""
    return built(cache_dir(), ("TEMPORAL_VERSION", "TEMPORAL_UI_VERSION"), BINARIES)
