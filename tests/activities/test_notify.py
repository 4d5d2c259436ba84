"""Notifications against real receivers on loopback: SMTP (aiosmtpd, plain and STARTTLS),
Slack, WeCom and a signed JSON webhook over HTTP; routing; and a dead channel that
does not fail a release."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

import workflows
from activities.notify import NotifyActivities
from kepler.notifications import Notification
from kepler.models import OperationStatus, ReleaseRequest
from kepler.settings import ConfigError, Platform, Secrets, parse_platform
from kepler.clients import operations as ops
from tests.fakes.world import FakeWorld
from tests.helpers import free_port
from tests.receivers import HttpReceiver, SmtpServer, self_signed

ROOT = Path(__file__).resolve().parents[2]
UI = "http://127.0.0.1:8233/namespaces/default/workflows/shop@prod"


def platform_with(notifications: dict[str, Any]) -> Platform:
    data = yaml.safe_load((ROOT / "kepler.yaml").read_text())
    data["notifications"] = notifications
    return Platform.model_validate(data)


def note(event: str = "succeeded", env: str = "prod") -> Notification:
    return Notification(event=event, service="shop", env=env, text="v2 (abc123) is live in prod",
                        link=f"shop@{env}")


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver()
    yield r
    r.close()


def send(platform: Platform, n: Notification, secrets: Secrets | None = None) -> list[str]:
    return NotifyActivities(platform, secrets or Secrets()).notify(n)


def test_slack_blocks_with_approval_buttons(receiver: HttpReceiver) -> None:
    p = platform_with({"channels": {"slack": {"type": "slack", "url": receiver.url}},
                       "routes": [{"channels": ["slack"]}]})
    assert send(p, note("awaiting_approval")) == ["slack"]
    got = receiver.received[0]
    assert got.path == "/hook/T0K3N" and got.headers["Content-Type"] == "application/json"
    assert got.json() == {
        "text": "shop@prod: awaiting approval: v2 (abc123) is live in prod",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn",
                                         "text": "*shop@prod: awaiting approval*\nv2 (abc123) is live in prod"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{UI}|Open in the Temporal UI>"}]},
            {"type": "actions", "block_id": "kepler_approval", "elements": [
                {"type": "button", "action_id": "kepler_approve", "style": "primary",
                 "value": "shop@prod", "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "kepler_reject", "style": "danger",
                 "value": "shop@prod", "text": {"type": "plain_text", "text": "Reject"}}]}]}
    send(p, note("succeeded"))
    assert [b["type"] for b in receiver.received[1].json()["blocks"]] == ["section", "context"]


def test_wecom_markdown(receiver: HttpReceiver) -> None:
    receiver.reply = b'{"errcode":0,"errmsg":"ok"}'
    p = platform_with({"channels": {"wx": {"type": "wecom", "url": receiver.url}},
                       "routes": [{"channels": ["wx"], "events": ["failed"]}]})
    assert send(p, note("failed")) == ["wx"]
    assert receiver.received[0].json() == {"msgtype": "markdown", "markdown": {
        "content": f"**shop@prod: failed**\n> v2 (abc123) is live in prod\n[Open in the Temporal UI]({UI})"}}


def test_wecom_error_code_is_a_delivery_failure(receiver: HttpReceiver) -> None:
    receiver.reply = b'{"errcode":93000,"errmsg":"invalid webhook url"}'
    p = platform_with({"channels": {"wx": {"type": "wecom", "url": receiver.url}},
                       "routes": [{"channels": ["wx"]}]})
    with pytest.raises(ApplicationError, match="errcode 93000") as e:
        send(p, note())
    assert not e.value.non_retryable


def test_webhook_is_signed_with_hmac_sha256(receiver: HttpReceiver) -> None:
    p = platform_with({"channels": {"audit": {"type": "webhook", "url": receiver.url}},
                       "routes": [{"channels": ["audit"]}]})
    secret = "s3cret-for-tests"
    send(p, note(), Secrets(webhook_secret=SecretStr(secret)))
    got = receiver.received[0]
    expected = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Kepler-Signature"] == expected
    assert got.headers["X-Kepler-Event"] == "succeeded"
    assert got.json() == {"id": "", "event": "succeeded", "service": "shop", "env": "prod",
                          "text": "v2 (abc123) is live in prod", "workflow_id": "shop@prod",
                          "link": UI}
    assert secret.encode() not in got.body and secret not in json.dumps(got.headers)


def test_webhook_without_secret_is_refused_not_sent_unsigned(receiver: HttpReceiver) -> None:
    p = platform_with({"channels": {"audit": {"type": "webhook", "url": receiver.url}},
                       "routes": [{"channels": ["audit"]}]})
    with pytest.raises(ApplicationError, match="KEPLER_WEBHOOK_SECRET") as e:
        send(p, note(), Secrets(webhook_secret=None))
    assert e.value.non_retryable and receiver.received == []


def test_email_over_plain_smtp() -> None:
    server = SmtpServer()
    try:
        p = platform_with({"channels": {"mail": {
            "type": "email", "host": "127.0.0.1", "port": server.port, "security": "plain",
            "sender": "kepler@example.com", "to": ["ops@example.com", "dev@example.com"]}},
            "routes": [{"channels": ["mail"], "envs": ["prod"]}]})
        assert send(p, note("rolled_back")) == ["mail"]
        sender, rcpts, msg = server.messages[0]
        assert (sender, rcpts) == ("kepler@example.com", ["ops@example.com", "dev@example.com"])
        assert msg["Subject"] == "[Kepler] shop@prod: rolled back"
        assert msg["To"] == "ops@example.com, dev@example.com"
        plain = next(part for part in msg.walk() if part.get_content_type() == "text/plain")
        assert plain.get_payload(decode=True).decode().replace("\r\n", "\n") == f"v2 (abc123) is live in prod\n\n{UI}\n"
    finally:
        server.close()


def test_email_over_starttls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = SmtpServer(tls=(cert, key))
    try:
        p = platform_with({"channels": {"mail": {
            "type": "email", "host": "127.0.0.1", "port": server.port, "security": "starttls",
            "ca_file": str(cert), "sender": "kepler@example.com", "to": ["ops@example.com"]}},
            "routes": [{"channels": ["mail"]}]})
        assert send(p, note()) == ["mail"]
        assert server.messages[0][2]["Subject"] == "[Kepler] shop@prod: succeeded"
        # the same server refuses a client that will not upgrade: a delivery failure
        plain = platform_with({"channels": {"mail": {
            "type": "email", "host": "127.0.0.1", "port": server.port, "security": "plain",
            "sender": "kepler@example.com", "to": ["ops@example.com"]}},
            "routes": [{"channels": ["mail"]}]})
        with pytest.raises(ApplicationError, match="email via 127.0.0.1"):
            send(plain, note())
        assert len(server.messages) == 1
    finally:
        server.close()


def test_routing_by_event_service_and_env(receiver: HttpReceiver) -> None:
    p = platform_with({
        "channels": {"slack": {"type": "slack", "url": receiver.url}, "log": {"type": "log"}},
        "routes": [{"channels": ["slack"], "events": ["failed"], "services": ["sh*"], "envs": ["prod"]},
                   {"channels": ["log"], "events": ["*"]}]})
    assert send(p, note("failed", "prod")) == ["slack", "log"]
    assert send(p, note("failed", "staging")) == ["log"]
    assert send(p, note("succeeded", "prod")) == ["log"]
    assert len(receiver.received) == 1


def test_no_routes_logs_only() -> None:
    assert send(platform_with({}), note()) == ["log"]


def test_bad_routes_are_refused_with_the_line() -> None:
    base = (ROOT / "kepler.yaml").read_text()
    start = base.index("notifications:\n")
    end = base.index("\n\n", start)  # the sample's notifications block, replaced
    text = base[:start] + (
        "notifications:\n  channels:\n    slack: {type: slack, url: http://x}\n"
        "  routes:\n    - channels: [slak]\n      events: [succeded]") + base[end:]
    with pytest.raises(ConfigError) as e:
        parse_platform(text)
    message = str(e.value)
    assert "notifications.routes.0.events: unknown event(s) succeded" in message
    with pytest.raises(ConfigError, match="undefined channel"):
        parse_platform(text.replace("succeded", "succeeded"))
    with pytest.raises(ConfigError, match="exactly one of url and url_env"):
        parse_platform(text.replace("url: http://x", "url_env: X, url: http://x"))


def test_dead_channel_is_retryable_and_secret_free() -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/T000/B000/SECRETTOKEN"
    p = platform_with({"channels": {"slack": {"type": "slack", "url": dead}},
                       "routes": [{"channels": ["slack"]}]})
    with pytest.raises(ApplicationError) as e:
        send(p, note())
    assert not e.value.non_retryable and "unreachable" in str(e.value)
    assert "SECRETTOKEN" not in str(e.value)


async def test_dead_channel_does_not_fail_a_release(time_env) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    p = platform_with({"channels": {"slack": {"type": "slack", "url": dead}},
                       "routes": [{"channels": ["slack"]}]})
    world = FakeWorld()
    fakes = [a for a in world.activities() if a.__temporal_activity_definition.name != "notify"]
    queue = f"q-{uuid.uuid4()}"
    with ThreadPoolExecutor(4) as executor:
        async with Worker(time_env.client, task_queue=queue, workflows=workflows.ALL,
                          activities=[*fakes, NotifyActivities(p, Secrets()).notify],
                          activity_executor=executor):
            started = await ops.start(time_env.client, ReleaseRequest(
                service="shop", env="staging", ref="v1", requested_by="carol"), queue)
            report = await started.handle.result()
            status = await started.handle.query("status", result_type=OperationStatus)
    assert report.outcome == "succeeded" and status.outcome == "succeeded"
    assert any(n.startswith("notification 'succeeded' not delivered: slack: slack at 127.0.0.1")
               for n in status.notes), status.notes


async def test_a_retry_does_not_resend_to_channels_already_reached(dev_env) -> None:
    """On the real dev server: one channel fails once; the other gets exactly one message."""
    good, flaky = HttpReceiver(), HttpReceiver(statuses=[503])
    try:
        p = platform_with({"channels": {"good": {"type": "slack", "url": good.url},
                                        "flaky": {"type": "slack", "url": flaky.url}},
                           "routes": [{"channels": ["good", "flaky"]}]})
        world = FakeWorld()
        fakes = [a for a in world.activities() if a.__temporal_activity_definition.name != "notify"]
        queue = f"q-{uuid.uuid4()}"
        with ThreadPoolExecutor(4) as executor:
            async with Worker(dev_env.client, task_queue=queue, workflows=workflows.ALL,
                              activities=[*fakes, NotifyActivities(p, Secrets()).notify],
                              activity_executor=executor):
                started = await ops.start(dev_env.client, ReleaseRequest(
                    service=f"n{uuid.uuid4().hex[:8]}", env="staging", ref="v1",
                    requested_by="carol"), queue)
                assert (await started.handle.result()).outcome == "succeeded"
                status = await started.handle.query("status", result_type=OperationStatus)
        assert len(flaky.received) == 2 and len(good.received) == 1
        assert not any("not delivered" in n for n in status.notes)
    finally:
        good.close()
        flaky.close()


def test_the_shared_http_client_never_carries_a_cookie_from_one_call_to_the_next() -> None:
    """One connection pool serves the registry, Prometheus and every webhook: a session
    cookie one of them sets must not travel with the next call (to it or to another)."""
    from activities.http_clients import shared_httpx

    receiver = HttpReceiver(reply_headers={"Set-Cookie": "sid=SECRET-SESSION; Path=/"})
    try:
        for _ in range(2):
            assert shared_httpx().post(receiver.url, content=b"{}", timeout=5).status_code == 200
        assert all("cookie" not in {k.lower() for k in r.headers} for r in receiver.received)
        assert len(receiver.received) == 2
    finally:
        receiver.close()
