"""Plumbing every stand-in shares: fault injection, persistent state, the audit log.

Each stand-in is a Starlette app built by `create_app(world)`. `with_sandbox_routes`
wraps it so it also serves:

- `/_sandbox/faults`  GET lists rules, POST adds one (a `FaultRule`), DELETE clears;
- `/_sandbox/audit`   GET the changes this stand-in made to its world, DELETE clears;
- `/_sandbox/health`  GET 200.

A fault rule matches by method and a regular expression searched in the path
(query string included), then delays, answers with a status code, or drops the
connection mid-response, for `count` requests (None: until cleared), each with
`probability`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class FaultRule(BaseModel):
    method: str = Field("*", description="HTTP method to match, or *")
    path: str = Field(".*", description="regular expression searched in path?query")
    client: str = Field("", description="regular expression searched in the User-Agent")
    status: int | None = Field(None, ge=100, le=599)
    latency_ms: int = Field(0, ge=0, le=600_000)
    drop: bool = False
    count: int | None = Field(1, ge=1)
    probability: float = Field(1.0, ge=0.0, le=1.0)
    body: str | None = None
    hits: int = 0


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._random = random.Random()

    def take(self, method: str, target: str, user_agent: str = "") -> FaultRule | None:
        with self._lock:
            for rule in list(self.rules):
                if rule.method not in ("*", method):
                    continue
                if not re.search(rule.path, target):
                    continue
                if rule.client and not re.search(rule.client, user_agent):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.hits += 1
                if rule.count is not None and rule.hits >= rule.count:
                    self.rules.remove(rule)
                return rule
        return None


class Audit:
    """Append-only record of every change a stand-in makes (tests assert on it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if path and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.entries.append(json.loads(line))

    def record(self, action: str, **detail: Any) -> None:
        entry = {"ts": time.time(), "action": action, **detail}
        with self._lock:
            self.entries.append(entry)
            if self.path:
                with self.path.open("a") as f:
                    f.write(json.dumps(entry, default=str) + "\n")

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            if self.path and self.path.exists():
                self.path.unlink()


class StateStore:
    """A JSON document on disk, written atomically; survives `dev down`/`dev up`."""

    def __init__(self, path: Path | None, default: dict[str, Any]) -> None:
        self.path = path
        self._lock = threading.RLock()
        if path and path.exists():
            self.data: dict[str, Any] = json.loads(path.read_text())
        else:
            self.data = default

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def save(self) -> None:
        if not self.path:
            return
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, default=str))
            os.replace(tmp, self.path)


class _FaultMiddleware:
    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        target = scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        agent = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                      if k == b"user-agent"), "")
        rule = self.faults.take(scope["method"], target, agent)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule.drop:
            # Promise a body and never send it: the server closes the connection
            # and the client sees a truncated response, as with a dropped link.
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"1000")]})
            raise ConnectionAbortedError("sandbox fault: connection dropped")
        if rule.status is not None:
            body = rule.body if rule.body is not None else json.dumps(
                {"message": f"sandbox fault: injected {rule.status}"})
            await Response(body, status_code=rule.status, media_type="application/json")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


class SandboxControl:
    """The /_sandbox endpoints of one stand-in: its fault rules, its audit log, health."""

    def __init__(self, faults: Faults, audit: Audit) -> None:
        self.faults = faults
        self.audit = audit

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/faults", self.list_faults, methods=["GET"]),
            Route("/_sandbox/faults", self.add_fault, methods=["POST"]),
            Route("/_sandbox/faults", self.clear_faults, methods=["DELETE"]),
            Route("/_sandbox/audit", self.get_audit, methods=["GET"]),
            Route("/_sandbox/audit", self.clear_audit, methods=["DELETE"]),
            Route("/_sandbox/health", self.health, methods=["GET"]),
        ]

    async def list_faults(self, _: Request) -> Response:
        return JSONResponse([r.model_dump() for r in self.faults.rules])

    async def add_fault(self, request: Request) -> Response:
        try:
            rule = FaultRule.model_validate(await request.json())
            re.compile(rule.path)
            re.compile(rule.client)
        except (ValidationError, re.error, ValueError) as e:
            return JSONResponse({"message": f"invalid fault rule: {e}"}, status_code=400)
        self.faults.rules.append(rule)
        return JSONResponse(rule.model_dump(), status_code=201)

    async def clear_faults(self, _: Request) -> Response:
        self.faults.rules.clear()
        return Response(status_code=204)

    async def get_audit(self, _: Request) -> Response:
        return JSONResponse(self.audit.entries)

    async def clear_audit(self, _: Request) -> Response:
        self.audit.clear()
        return Response(status_code=204)

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})


def with_sandbox_routes(app: ASGIApp, faults: Faults, audit: Audit) -> ASGIApp:
    """The stand-in app, behind fault injection, plus the /_sandbox endpoints."""
    control = Starlette(routes=SandboxControl(faults, audit).routes())

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/_sandbox/"):
            await control(scope, receive, send)
        else:
            await app(scope, receive, send)

    return _FaultMiddleware(dispatch, faults)

