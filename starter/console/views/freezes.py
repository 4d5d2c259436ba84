"""The freezes page, /freezes: each environment frozen or open now; a calendar of the next
DAYS days by environment, each frozen day marked with its freezes' reasons and hours; and
the list `kepler freeze list` prints (the platform's windows from kepler.yaml, the ad-hoc
freezes running), read the same way (kepler/clients/freezes.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from kepler.clients import freezes as freeze_client
from kepler.clients.freezes import FreezeLookupError, ListedFreeze
from kepler.freeze import ActiveFreeze, EnvironmentFreeze
from starter.console.app import Console, Page, Problem
from starter.console.auth import Viewer

DAYS = 14
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Span:
    """One time a freeze is in force."""
    env: str
    kind: str  # window | ad-hoc
    name: str
    reason: str
    since: datetime
    until: datetime
    by: str = ""


@dataclass
class Cell:
    day: date
    spans: list[Span] = field(default_factory=list)

    @property
    def frozen(self) -> bool:
        return bool(self.spans)

    def hours(self, span: Span) -> str:
        """When `span` holds on this day: all day, from, until, or from-until (UTC)."""
        start = datetime.combine(self.day, time(), timezone.utc)
        begins, ends = span.since > start, span.until < start + DAY
        if begins and ends:
            return f"{span.since:%H:%M}–{span.until:%H:%M}"
        if begins:
            return f"from {span.since:%H:%M}"
        return f"until {span.until:%H:%M}" if ends else "all day"


@dataclass
class EnvRow:
    env: str
    cells: list[Cell]


def spans_of(envs: list[str], config: dict[str, EnvironmentFreeze], adhoc: list[ListedFreeze],
             start: datetime, end: datetime) -> list[Span]:
    """Every freeze of `envs` in force at some time in [start, end): each time a platform
    window is, and each ad-hoc freeze listed."""
    spans = []
    for env in envs:
        for w in config[env].windows if env in config else []:
            spans += [Span(env, "window", w.name, w.reason, since, until)
                      for since, until in w.spans(start, end)]
    spans += [Span(f.env, f.kind, f.name, f.reason, f.since, f.until, f.by) for f in adhoc
              if f.kind == "ad-hoc" and f.since is not None and f.until is not None
              and f.since < end and f.until > start and f.env in envs]
    return sorted(spans, key=lambda s: (s.since, s.env, s.name))


def calendar(envs: list[str], spans: list[Span], first: date, days: int = DAYS) -> list[EnvRow]:
    """A row per environment, a cell per day from `first`, holding the spans that overlap it."""
    rows = []
    for env in envs:
        cells = []
        for i in range(days):
            day = first + timedelta(days=i)
            start = datetime.combine(day, time(), timezone.utc)
            cells.append(Cell(day, [s for s in spans if s.env == env
                                    and s.since < start + DAY and s.until > start]))
        rows.append(EnvRow(env, cells))
    return rows


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    client = await console.client.get()
    platform = console.platform
    envs = sorted(platform.environments)
    now = datetime.now(timezone.utc)
    first = now.date()
    start = datetime.combine(first, time(), timezone.utc)
    try:
        listed = await freeze_client.listing(client, platform, envs, now)
        in_force: dict[str, ActiveFreeze | None] = {
            env: await freeze_client.current(client, platform, env, now) for env in envs}
    except FreezeLookupError as e:
        raise Problem(f"cannot tell which environments are frozen: {e}", 503) from None
    spans = spans_of(envs, platform.freeze, listed, start, start + DAYS * DAY)
    return {"title": "Freezes", "now": now, "envs": envs, "in_force": in_force,
            "days": [first + timedelta(days=i) for i in range(DAYS)],
            "calendar": calendar(envs, spans, first), "listed": listed,
            "upcoming": [s for s in spans if s.until > now]}


PAGE = Page("/freezes", "freezes.html", data)
