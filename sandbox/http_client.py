"""One `httpx.AsyncClient` per event loop for the stand-ins' own outgoing requests
(image lookups, push hooks, Jenkins builds).

Building a client builds an SSL context (about 15 ms of CPU), which a client per request
paid every time. Callers pass their timeout per request. `Sandbox.serve` closes the
client of its loop once every stand-in has stopped.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

# Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request never
# goes out on a connection the stand-in on the other end is closing. Few are kept: httpcore
# checks every pooled connection (a readability poll each) for every request, which with
# a hundred kept was most of an image lookup's CPU at 200 releases at once.
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=16, keepalive_expiry=2.0)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = \
    weakref.WeakKeyDictionary()


def shared_client() -> httpx.AsyncClient:
    """The running loop's client (created on first use, or again after it was closed)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = httpx.AsyncClient(limits=LIMITS)
    return client


async def close_shared_client() -> None:
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
