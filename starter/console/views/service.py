"""The service page (`/services/{service}`): its promotion path as columns (what is live in
each environment, its Deployment, the soak left before the next, any freeze), the running
operation's steps, the history with outcomes, the verified audit of the newest operations
and a log tail per environment. It reads (starter/console/service_reads.py), never writes."""

from __future__ import annotations

import asyncio
from typing import Any

from kepler.validation import service_name
from starter.console.app import Console, Page, Problem
from starter.console.auth import Viewer
from starter.console.service_reads import (
    AUDIT_OPERATIONS, HISTORY_LIMIT, LOG_LINES, UnknownService, read_service,
)

CONNECT_DEADLINE = 5.0  # seconds: past it, the page shows what Kubernetes alone says

MARKS = {"done": "✔", "failed": "✘", "running": "…", "skipped": "–", "undone": "↺"}


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    service = params["service"]
    try:
        service_name(service)  # it goes into a visibility query
    except ValueError as e:
        raise Problem(f"service: {e}", 400) from None
    try:
        client = await asyncio.wait_for(console.client.get(), CONNECT_DEADLINE)
    except Exception:  # noqa: BLE001 - Temporal down: its sections say so
        client = None
    try:
        view = await read_service(console.platform, client, service)
    except UnknownService:
        raise Problem(f"no service {service!r}: Kepler has no operation on it "
                      "(see the services page, or kepler service list)", 404) from None
    return {"title": service, "service": service, "view": view, "marks": MARKS,
            "history_limit": HISTORY_LIMIT, "audit_operations": AUDIT_OPERATIONS,
            "log_lines": LOG_LINES}


PAGE = Page("/services/{service}", "service.html", data)
