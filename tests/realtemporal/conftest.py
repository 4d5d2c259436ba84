"""The realtemporal tier: Kepler on the real Temporal server (sandbox/temporal: frontend,
history, matching and worker services built by `make temporal`) on Debian's PostgreSQL, with
`kepler worker` processes that tests kill, and a server and database that tests restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from kepler.search_attributes import ALL_KEYS, type_name

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # every test of this tier is marked, so `-m realtemporal` selects it
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.realtemporal)


def require_temporal_built() -> None:
    """Skip when `make temporal` has not built the server (or PostgreSQL is not installed),
    except in CI (KEPLER_REQUIRE_REAL=1), where that fails the run."""
    from sandbox.temporal import cache_dir, is_built
    from sandbox.temporal.postgres import bin_dir

    reason = None
    if not is_built():
        reason = f"the Temporal server is not built in {cache_dir()} (run `make temporal`)"
    elif bin_dir() is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql)"
    if reason:
        if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
            pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def temporal_cluster() -> Iterator["TemporalCluster"]:  # noqa: F821
    """A Temporal server of the test's own on PostgreSQL (about 3 s to start), with Kepler's
    search attributes in namespace default; its state removed at the end."""
    from sandbox.temporal import TemporalCluster

    require_temporal_built()
    with TemporalCluster(search_attributes={k.name: type_name(k) for k in ALL_KEYS}) as cluster:
        yield cluster
