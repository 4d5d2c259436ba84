"""Bodies over the limit are refused before they are read: chat-ops (64 KiB, before its
Slack signature is checked), the Alertmanager receiver (64 KiB) and the codec server.
The apps are the real ones, served over ASGI; a streamed body records how much of it
the server pulled."""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from kepler.settings import Secrets, load_platform
from starter import alerts, chatops

CHUNK = 8 * 1024


class Flood:
    """A body of `total` bytes sent in chunks, counting what the server consumed."""

    def __init__(self, total: int) -> None:
        self.total, self.sent = total, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += CHUNK
            yield b"x" * CHUNK


def app_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kepler")


@pytest.fixture
def chat() -> httpx.AsyncClient:
    secrets = Secrets(slack_signing_secret=SecretStr("s" * 32))
    return app_client(chatops.create_app(load_platform(), secrets, client=None))


@pytest.fixture
def alert_receiver() -> httpx.AsyncClient:
    secrets = Secrets(alertmanager_token=SecretStr("t0ken"))
    return app_client(alerts.create_app(load_platform(), secrets, client=None))


@pytest.mark.parametrize("path", ["/slack/commands", "/slack/interactions"])
async def test_chatops_refuses_a_declared_huge_body_before_reading_it(chat: httpx.AsyncClient,
                                                                      path: str) -> None:
    flood = Flood(10 * 1024 * 1024)
    r = await chat.post(path, content=flood, headers={"Content-Length": str(flood.total)})
    assert r.status_code == 413 and "over 64 KiB" in r.text
    assert flood.sent <= CHUNK  # not read


async def test_chatops_stops_reading_a_chunked_body_past_the_limit(chat: httpx.AsyncClient) -> None:
    flood = Flood(10 * 1024 * 1024)
    r = await chat.post("/slack/commands", content=flood)  # no Content-Length: chunked
    assert r.status_code == 413
    assert flood.sent <= 64 * 1024 + 2 * CHUNK  # stopped right after the limit


async def test_the_alert_receiver_refuses_a_huge_body(alert_receiver: httpx.AsyncClient) -> None:
    flood = Flood(2 * 1024 * 1024)
    r = await alert_receiver.post("/alertmanager", content=flood,
                                  headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 413 and flood.sent <= 64 * 1024 + 2 * CHUNK
