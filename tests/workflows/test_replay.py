"""Determinism: recorded histories of every workflow replay against today's code.

A change to workflow code that would break running workflows fails here; guard
such a change with `workflow.patched`. The histories come from the tests that call
`tests.helpers.keep_history` (one or more per workflow type, kept from the code of their
day so old runs stay covered); record a new one with
`KEPLER_RECORD_HISTORIES=1 pytest <that test>`. (The five oldest come from `_record`
below: `KEPLER_RECORD_HISTORIES=1 pytest tests/workflows/test_replay.py` rewrites them.)
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import AsyncIterator

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.worker import Replayer, Worker

import workflows
from kepler.models import ApprovalDecision, CreateServiceRequest, ReleaseRequest, RollbackRequest, ServiceSpec
from kepler.steps import Revision
from kepler.temporal import data_converter
from kepler import operations_client as ops
from tests.fakes.world import FakeWorld, sha_of
from tests.helpers import HISTORIES



async def _record(time_env) -> dict[str, WorkflowHistory]:
    world = FakeWorld()
    world.history = [Revision(revision=2, image=world.deployment["image"]),
                     Revision(revision=1, image="reg/demo/shop@sha256:" + "c" * 64, commit=sha_of("v0"))]
    queue = f"q-{uuid.uuid4()}"
    out: dict[str, WorkflowHistory] = {}
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        async def run(name: str, req, approve: bool = False) -> None:
            started = await ops.start(time_env.client, req, queue)
            if approve:
                while not (await ops.status(time_env.client, started.workflow_id)).pending_approval:
                    await asyncio.sleep(0.05)
                await ops.decide(time_env.client, req.service, req.env, "approve",
                                 ApprovalDecision(approver="alice"))
            try:
                await started.handle.result()
            except WorkflowFailureError:
                pass
            out[name] = await started.handle.fetch_history()

        await run("create", CreateServiceRequest(spec=ServiceSpec(name="shop", team="t"), requested_by="c"))
        await run("release", ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="c"))
        await run("release-approved", ReleaseRequest(service="shop", env="prod", ref="v1", requested_by="c"),
                  approve=True)
        world.rollout_fails = True
        await run("release-rolled-back", ReleaseRequest(service="shop", env="staging", ref="v2", requested_by="c"))
        await run("rollback", RollbackRequest(service="shop", env="staging", requested_by="c"))
    return out


async def test_fresh_histories_replay(time_env) -> None:
    histories = await _record(time_env)
    if os.environ.get("KEPLER_RECORD_HISTORIES") == "1":
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(history.to_json())
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories.values():
            yield history

    result = await Replayer(workflows=workflows.ALL, data_converter=data_converter()).replay_workflows(
        each(), raise_on_replay_failure=False)
    assert not result.replay_failures, result.replay_failures


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=workflows.ALL, data_converter=data_converter()).replay_workflow(history)


def test_histories_were_recorded() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 5, "record them: KEPLER_RECORD_HISTORIES=1"


def test_every_workflow_type_has_a_recorded_history() -> None:
    """Each workflow type in the registry is replayed from at least one recorded history."""
    from kepler.operations import OPERATIONS

    recorded = {json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
                ["workflowType"]["name"] for p in HISTORIES.glob("*.json")}
    assert {o.workflow for o in OPERATIONS} <= recorded, {o.workflow for o in OPERATIONS} - recorded
