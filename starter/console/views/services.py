"""The services page: every service with its team, owners and environments, filtered by
team, and what is running now anywhere."""

from __future__ import annotations

from typing import Any

from starter.console.app import Console, Page
from starter.console.auth import Viewer
from starter.console.reads import services


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    client = await console.client.get()
    rows = await services(client, console.specs, list(console.platform.environments))
    teams = sorted({r.team for r in rows if r.team})
    team = query.get("team", "")
    shown = [r for r in rows if not team or r.team == team]
    running = [op for r in rows for op in r.running]
    return {"title": "Services", "services": shown, "teams": teams, "team": team,
            "running": running, "total": len(rows)}


PAGE = Page("/services", "services.html", data)
