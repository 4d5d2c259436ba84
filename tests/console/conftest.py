"""The console served for real (uvicorn, on the test session's event loop, at console.url of
the session's kepler.yaml) against the dev server, the worker and the sandbox; readers get a
session cookie minted with the console's own secret (signing in with a passkey is what the
browser tests do)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from kepler.clients.temporal import LazyClient
from kepler.settings import Platform, Secrets, load_platform
from starter.console import console_app
from starter.console.auth import SESSION_COOKIE, Tokens
from tests.helpers import wait_until

SECRET = "console-test-secret"


@dataclass
class ConsoleServer:
    url: str
    platform: Platform
    platform_file: Path
    tokens: Tokens

    @property
    def passkeys(self) -> Path:
        return self.platform.identity.path(self.platform.identity.passkeys or "passkeys")

    def cookie(self, person: str) -> str:
        return self.tokens.make("session", {"person": person}, timedelta(hours=1))

    def reader(self, person: str = "dev") -> httpx.AsyncClient:
        """An HTTP client signed in as `person` (a session cookie: it reads, never approves)."""
        return httpx.AsyncClient(base_url=self.url, cookies={SESSION_COOKIE: self.cookie(person)},
                                 timeout=30, follow_redirects=False)

    def poster(self, person: str = "dev") -> httpx.AsyncClient:
        """`reader`, with what the console's script sends on a POST (Origin, CSRF token)."""
        cookie = self.cookie(person)
        return httpx.AsyncClient(base_url=self.url, cookies={SESSION_COOKIE: cookie}, timeout=30,
                                 headers={"Origin": self.url,
                                          "X-CSRF-Token": self.tokens.csrf(cookie)})


async def first_live_event(reader: httpx.AsyncClient, path: str) -> str:
    """The first server-sent event of `path`'s live block: the block as the server renders it."""
    async with reader.stream("GET", "/live", params={"page": path}) as events:
        assert events.status_code == 200
        data: list[str] = []
        async for line in events.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                return "\n".join(data)
    raise AssertionError("the live stream ended without an event")


@pytest.fixture(scope="session")
async def console(platform_file: Path, dev_env: Any, e2e_worker: Any) -> AsyncIterator[ConsoleServer]:
    platform = load_platform(platform_file)
    assert platform.console.url is not None
    host, _, port = platform.console.listen.rpartition(":")
    app = console_app(platform, Secrets(console_secret=SecretStr(SECRET)),
                      client=LazyClient(None, dev_env.client))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_until, lambda: server.started, 30)
    try:
        yield ConsoleServer(url=platform.console.url, platform=platform,
                            platform_file=platform_file, tokens=Tokens(SECRET.encode()))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
