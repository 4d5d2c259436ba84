"""Determinism: recorded histories of every workflow replay against today's code.

A change to workflow code that would break running workflows fails here; guard
such a change with `workflow.patched`, retired as docs/architecture.md "Patches" says (a
history recorded before a retired patch is deleted). The histories come from the tests that call
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
from kepler.models import CreateServiceRequest, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.payloads import Revision
from kepler.clients.temporal import data_converter
from kepler.clients import operations as ops
from tests.fakes.world import FakeWorld, sha_of
from tests.helpers import HISTORIES, decide, signed



async def _record(time_env) -> dict[str, WorkflowHistory]:
    world = FakeWorld()
    world.history = [Revision(revision=2, image=world.deployment["image"]),
                     Revision(revision=1, image="reg/demo/shop@sha256:" + "c" * 64, commit=sha_of("v0"))]
    queue = f"q-{uuid.uuid4()}"
    out: dict[str, WorkflowHistory] = {}
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=world.activities()):
        async def run(name: str, req, approve: bool = False) -> None:
            started = await ops.start(time_env.client, signed(req, await time_env.get_current_time()), queue)
            if approve:
                while not (await ops.status(time_env.client, started.workflow_id)).pending_approval:
                    await asyncio.sleep(0.05)
                await decide(time_env.client, req.service, req.env, "alice")
            try:
                await started.handle.result()
            except WorkflowFailureError:
                pass
            out[name] = await started.handle.fetch_history()

        await run("create", CreateServiceRequest(spec=ServiceSpec(name="shop", team="t"), requested_by="carol"))
        await run("release", ReleaseRequest(service="shop", env="staging", ref="v1", requested_by="carol"))
        await run("release-approved", ReleaseRequest(service="shop", env="prod", ref="v1", requested_by="carol"),
                  approve=True)
        world.rollout_fails = True
        await run("release-rolled-back", ReleaseRequest(service="shop", env="staging", ref="v2", requested_by="carol"))
        await run("rollback", RollbackRequest(service="shop", env="staging", requested_by="carol"))
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


async def workflow_id_of(text: str, fallback: str) -> str:
    """The id the recorded run had (a signed request names it, so replay must use it):
    from its start input, as the starter derives it."""
    from kepler.contracts import BY_WORKFLOW

    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    op = BY_WORKFLOW.get(started["workflowType"]["name"])
    if op is None:
        return fallback
    history = WorkflowHistory.from_json(fallback, text)
    payloads = history.events[0].workflow_execution_started_event_attributes.input.payloads
    request = (await data_converter().decode(payloads[:1], [op.request]))[0]
    try:
        return ops.workflow_id(request)
    except TypeError:  # an id of its own (an alert's, a schedule's fire)
        return fallback


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    text = path.read_text()
    history = WorkflowHistory.from_json(await workflow_id_of(text, path.stem), text)
    await Replayer(workflows=workflows.ALL, data_converter=data_converter()).replay_workflow(history)


def test_histories_were_recorded() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 5, "record them: KEPLER_RECORD_HISTORIES=1"


def test_every_workflow_type_has_a_recorded_history() -> None:
    """Each workflow type in the registry is replayed from at least one recorded history."""
    from kepler.contracts import OPERATIONS

    recorded = {json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
                ["workflowType"]["name"] for p in HISTORIES.glob("*.json")}
    assert {o.workflow for o in OPERATIONS} <= recorded, {o.workflow for o in OPERATIONS} - recorded
