"""HTTP clients made once per worker (or per worker thread), never once per call.

Building an httpx client builds an SSL context, even for plain http: at 200 concurrent
releases that alone was a quarter of the worker's CPU (bench/RESULTS.md). Pooled
connections also save a TCP handshake per call.
"""

from __future__ import annotations

import threading
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Callable, Generic, TypeVar

import httpx

from kepler import USER_AGENT

T = TypeVar("T")

_shared: httpx.Client | None = None
_lock = threading.Lock()


class NoCookies(CookieJar):
    """A jar that keeps nothing: one client serves the registry, Prometheus and every
    webhook, so a cookie one of them sets must never travel to another."""

    def __init__(self) -> None:
        super().__init__(policy=DefaultCookiePolicy(allowed_domains=[]))


def shared_httpx() -> httpx.Client:
    """The worker's one httpx connection pool (httpx.Client is safe to share between
    threads). Callers pass their own timeout, auth and headers per request."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = httpx.Client(
                headers={"User-Agent": USER_AGENT}, cookies=NoCookies(),
                # idle connections dropped before a server's usual 5 s keep-alive ends
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                    keepalive_expiry=4.0))
        return _shared


class PerThread(Generic[T]):
    """One client per worker thread, for clients built on requests.Session (python-gitlab),
    which is not documented as thread-safe."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._local = threading.local()

    def get(self) -> T:
        client: T | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
        return client
