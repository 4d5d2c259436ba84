"""Chat-ops endpoint: Slack signing, identity map, the CLI's grammar, and an approve
button that really advances a waiting release (time-skipping server + worker)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError
from temporalio.worker import Worker

import workflows
from kepler.models import OperationStatus, ReleaseReport
from kepler.settings import Secrets, load_platform
from starter import chatops
from tests.fakes.world import FakeWorld
from tests.receivers import HttpReceiver

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
USERS = {"UALICE": "alice", "UCAROL": "carol", "UMAL": "mallory"}


class Bot:
    def __init__(self, client: Any, queue: str) -> None:
        base = load_platform()
        self.platform = base.model_copy(update={
            "temporal": base.temporal.model_copy(update={"task_queue": queue}),
            "chatops": base.chatops.model_copy(update={"users": USERS,
                                                       "response_url_prefix": "http://127.0.0.1:"})})
        self.client = client
        app = chatops.create_app(self.platform, Secrets(slack_signing_secret=SecretStr(SECRET)), client)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")

    async def post(self, path: str, body: bytes, ts: int | None = None, secret: str = SECRET,
                   signed: bool = True) -> httpx.Response:
        ts = int(time.time()) if ts is None else ts
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers.update({"X-Slack-Request-Timestamp": str(ts),
                            "X-Slack-Signature": chatops.signature(secret.encode(), str(ts), body)})
        return await self.http.post(path, content=body, headers=headers)

    async def command(self, text: str, user: str = "UCAROL") -> str:
        r = await self.post("/slack/commands", command_body(text, user))
        assert r.status_code == 200 and r.json()["response_type"] == "ephemeral"
        return r.json()["text"]

    async def button(self, verb: str, value: str, user: str, response_url: str = "") -> str:
        r = await self.post("/slack/interactions", button_body(verb, value, user, response_url))
        assert r.status_code == 200
        return r.json()["text"]

    async def status(self, workflow_id: str) -> OperationStatus | None:
        try:
            return await self.client.get_workflow_handle(workflow_id).query(
                "status", result_type=OperationStatus)
        except RPCError:
            return None

    async def wait_stage(self, workflow_id: str, stage: str, timeout: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.status(workflow_id)
            if status and status.stage == stage:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{stage!r} never reached"
            await asyncio.sleep(0.05)


def command_body(text: str, user: str) -> bytes:
    return urlencode({"command": "/kepler", "text": text, "user_id": user, "team_id": "T1",
                      "response_url": "https://hooks.slack.com/commands/x"}).encode()


def button_body(verb: str, value: str, user: str, response_url: str = "") -> bytes:
    payload = {"type": "block_actions", "user": {"id": user}, "response_url": response_url,
               "actions": [{"action_id": f"kepler_{verb}", "value": value}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.fixture
async def bot(time_env) -> AsyncIterator[Bot]:
    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=FakeWorld().activities()):
        b = Bot(time_env.client, queue)
        yield b
        await b.http.aclose()


async def test_unsigned_wrong_stale_and_replayed_requests_get_401_and_change_nothing(bot: Bot) -> None:
    body = command_body("release shop --env staging --ref v1", "UCAROL")
    assert (await bot.post("/slack/commands", body, signed=False)).status_code == 401
    assert (await bot.post("/slack/commands", body, secret="not-the-secret")).status_code == 401
    assert (await bot.post("/slack/commands", body, ts=int(time.time()) - 301)).status_code == 401
    assert (await bot.post("/slack/interactions", button_body("approve", "shop@prod", "UALICE"),
                           secret="nope")).status_code == 401
    assert await bot.status("shop@staging") is None  # nothing started
    ts = int(time.time())
    first = await bot.post("/slack/commands", command_body("status shop --env staging", "UCAROL"), ts=ts)
    again = await bot.post("/slack/commands", command_body("status shop --env staging", "UCAROL"), ts=ts)
    assert first.status_code == 200 and again.status_code == 401  # a replay


async def test_unmapped_user_is_refused(bot: Bot) -> None:
    text = await bot.command("release shop --env staging --ref v1", user="UNOBODY")
    assert text.startswith(":no_entry: refused: Slack user UNOBODY is not mapped")
    assert await bot.status("shop@staging") is None
    text = await bot.button("approve", "shop@prod", "UNOBODY")
    assert "UNOBODY is not mapped" in text


async def test_release_command_starts_a_release_with_a_ui_link(bot: Bot) -> None:
    text = await bot.command('release shop --env staging --ref v1 --reason "hotfix for #12"')
    assert text == (":rocket: started release shop v1 to staging by carol: hotfix for #12\n"
                    "<http://127.0.0.1:8233/namespaces/default/workflows/shop@staging|shop@staging>")
    handle = bot.client.get_workflow_handle("shop@staging", result_type=ReleaseReport)
    assert (await handle.result()).outcome == "succeeded"
    status = await bot.command("status shop --env staging")
    assert status.startswith("*shop@staging*: release v1@") and "*succeeded*" in status


async def test_bad_input_is_refused_naming_the_field(bot: Bot) -> None:
    assert "--env: unknown environment 'qa'" in await bot.command("release shop --env qa --ref v1")
    assert "the following arguments are required: --ref" in await bot.command("release shop --env prod")
    assert "service: must be a DNS-1035 label" in await bot.command("release Shop_1 --env prod --ref v1")
    assert "ref: is not a valid git ref" in await bot.command("release shop --env prod --ref a..b")
    assert "unknown command 'deploy'" in await bot.command("deploy shop")
    assert (await bot.command("help")).startswith("*Kepler commands*")
    assert await bot.status("shop@prod") is None


async def test_canary_and_its_controls_work_like_the_cli(bot: Bot) -> None:
    assert "--steps: must be comma-separated" in await bot.command(
        "canary shop --env prod --ref v2 --steps 10,x")
    assert "no canary is running" in await bot.command("abort shop --env prod")
    assert await bot.status("shop@prod") is None  # nothing was started by the refusals

    started = await bot.command("canary shop --env prod --ref v2 --steps 20,50 --reason test")
    assert started.startswith(":rocket: started canary shop v2 to prod by carol: test"), started
    await bot.wait_stage("shop@prod", "awaiting approval")  # prod's policy asks first
    status = await bot.status("shop@prod")
    assert status and status.operation.value == "canary" and status.requested_by == "carol via slack:UCAROL"
    refused = await bot.command("pause shop --env prod")
    assert refused.startswith(":no_entry: refused: shop@prod: the canary is waiting"), refused
    aborted = await bot.command("abort shop --env prod --reason x")  # at once, even now
    assert aborted.startswith(":traffic_light: shop@prod: aborting"), aborted
    handle = bot.client.get_workflow_handle("shop@prod")
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await bot.status("shop@prod")).outcome == "aborted"


async def test_approve_button_advances_a_waiting_release_with_four_eyes(bot: Bot) -> None:
    receiver = HttpReceiver()
    try:
        await bot.command("release shop --env prod --ref v2")
        await bot.wait_stage("shop@prod", "awaiting approval")
        status = await bot.command("status shop --env prod")
        assert "awaiting approval by one of alice, bob (0/1)" in status
        refused = await bot.button("approve", "shop@prod", "UCAROL")
        assert refused.startswith(":no_entry: refused: carol requested this operation and may not "
                                  "approve it (four eyes)")
        assert "mallory is not an approver for prod" in await bot.button("approve", "shop@prod", "UMAL")
        text = await bot.button("approve", "shop@prod", "UALICE", response_url=receiver.url)
        assert text.startswith(":white_check_mark: shop@prod: approved by alice")
        report = await bot.client.get_workflow_handle("shop@prod", result_type=ReleaseReport).result()
        assert report.outcome == "succeeded" and any("alice" in a for a in report.approved_by)
        deadline = asyncio.get_running_loop().time() + 10
        while not receiver.received:
            assert asyncio.get_running_loop().time() < deadline, "no follow-up posted"
            await asyncio.sleep(0.05)
        assert receiver.received[0].json() == {"response_type": "ephemeral",
                                               "replace_original": False, "text": text}
        nothing = await bot.button("approve", "shop@prod", "UALICE")
        assert nothing.startswith(":no_entry: refused:")
    finally:
        receiver.close()


async def test_a_button_approves_only_the_run_it_was_posted_for(bot: Bot) -> None:
    """v1's approval message is clicked after v1 was cancelled and v2 started under the
    same id: refused, naming both runs; v2 still waits."""
    await bot.command("release shop --env prod --ref v1")
    await bot.wait_stage("shop@prod", "awaiting approval")
    first = await bot.client.get_workflow_handle("shop@prod").describe()
    await bot.client.get_workflow_handle("shop@prod").cancel()
    await bot.wait_stage("shop@prod", "done")
    await bot.command("release shop --env prod --ref v2")
    await bot.wait_stage("shop@prod", "awaiting approval")
    text = await bot.button("approve", f"shop@prod/{first.run_id}", "UALICE")
    assert text.startswith(f":no_entry: refused: this approve was for run {first.run_id}")
    status = await bot.status("shop@prod")
    assert status.pending_approval is not None and not status.approvals
    current = await bot.client.get_workflow_handle("shop@prod").describe()
    text = await bot.button("approve", f"shop@prod/{current.run_id}", "UALICE")
    assert text.startswith(":white_check_mark: shop@prod: approved by alice")


async def test_reject_command_with_comment(bot: Bot) -> None:
    await bot.command("release shop --env prod --ref v3")
    await bot.wait_stage("shop@prod", "awaiting approval")
    text = await bot.command('reject shop --env prod --comment "freeze week"', user="UALICE")
    assert text.startswith(":white_check_mark: shop@prod: rejected by alice")
    deadline = asyncio.get_running_loop().time() + 10
    status = await bot.command("status shop --env prod")
    while "*rejected*" not in status:
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.05)
        status = await bot.command("status shop --env prod")
    assert "rejected by alice via slack:UALICE: freeze week" in status


async def test_conflicting_release_is_refused_naming_the_running_one(bot: Bot) -> None:
    await bot.command("release shop --env prod --ref v3")
    await bot.wait_stage("shop@prod", "awaiting approval")
    text = await bot.command("release shop --env prod --ref v4", user="UALICE")
    assert text.startswith(":no_entry: refused: shop@prod is busy: release v3")
    assert "started by carol" in text
    await bot.client.get_workflow_handle("shop@prod").cancel()


def test_no_signing_secret_no_endpoint() -> None:
    with pytest.raises(chatops.NotConfigured, match="KEPLER_SLACK_SIGNING_SECRET"):
        chatops.create_app(load_platform(), Secrets(slack_signing_secret=None))


async def test_chat_controls_are_signed_for_the_slack_user_and_checked_as_theirs(time_env) -> None:
    """The bot signs a control as a delegate naming the mapped person: carol (the requester)
    may pause her prod canary but not promote it past its analysis; alice (an approver) may."""
    from tests.fakes.canary import CanaryWorld

    queue = f"q-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                      activities=CanaryWorld().activities()):
        bot = Bot(time_env.client, queue)
        await bot.command("canary shop --env prod --ref v2 --steps 20,50")
        await bot.wait_stage("shop@prod", "awaiting approval")
        assert "approved" in await bot.button("approve", "shop@prod", "UALICE")
        await bot.wait_stage("shop@prod", "canary 20%")
        refused = await bot.command("promote shop --env prod")
        assert refused.startswith(":no_entry: refused: shop@prod: promote: carol may not promote"), refused
        paused = await bot.command("pause shop --env prod --reason look")
        assert paused.startswith(":traffic_light: shop@prod: paused at 20%"), paused
        status = await bot.status("shop@prod")
        assert status.canary.paused_by == "carol via slack:UCAROL"
        promoted = await bot.command("promote shop --env prod", user="UALICE")
        assert promoted.startswith(":traffic_light: shop@prod: promoting"), promoted
        handle = bot.client.get_workflow_handle("shop@prod")
        assert (await handle.result())["outcome"] == "succeeded"
        assert "promotion requested by alice via slack:UALICE" in (await bot.status("shop@prod")).notes
        await bot.http.aclose()
