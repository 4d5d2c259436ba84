"""The real Temporal server for the production tier (tests marked realtemporal).

`make temporal` (build.sh) builds the server and its SQL tool from go.temporal.io/server at the
version pinned in sandbox/cluster/versions.env, cached outside the repository
(versions.cache_dir()). `TemporalCluster` runs it on Debian's PostgreSQL on loopback;
`python -m sandbox.temporal` does the same for `kepler dev up --temporal server`.

This package imports nothing from kepler/, workflows/, activities/ or starter/.
"""

from __future__ import annotations

from sandbox.cluster.procs import ClusterStartError

from .server import TemporalCluster
from .versions import cache_dir, is_built

__all__ = ["ClusterStartError", "TemporalCluster", "cache_dir", "is_built"]
