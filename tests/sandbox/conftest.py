"""Fixtures of the sandbox's own tests; the real control planes (`real_cluster`,
`sandbox_cluster`) are session fixtures in tests/conftest.py, shared with tests/realk8s."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_cluster_built


@pytest.fixture(scope="session")
def cluster_binaries() -> Path:
    """The directory of the built control plane (for tests that start their own); skips or fails
    like `real_cluster` when it is not built."""
    from sandbox.cluster import binaries_dir

    require_cluster_built()
    path = binaries_dir()
    assert path is not None
    return path
