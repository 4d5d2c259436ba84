"""The DORA page, /dora: the four keys (deployment frequency, lead time for changes, change
failure rate, time to restore) per environment, a bar chart each by week over the last
WEEKS weeks, and their figures over the whole span; `?team=` keeps one team's services.
Computed by the code `kepler metrics` runs (starter/metrics.py, kepler/metrics.py): the
same rows from visibility, compute() over each week (kepler.metrics.per_period)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from markupsafe import Markup

from kepler.metrics import EnvMetrics, compute, per_period
from starter.cli_common import CliError
from starter.console.app import Console, Page, Problem
from starter.console.auth import Viewer
from starter.console.charts import Bar, Format, Ticks, bar_chart, duration_ticks, ticks
from starter.metrics import changes, human, scope

WEEKS = 8
WEEK = timedelta(days=7)
CHART_WIDTH, CHART_HEIGHT = 420, 200


@dataclass
class KeyChart:
    caption: str
    svg: Markup


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _count(value: float) -> str:
    return f"{value:g}"


def key_charts(env: str, periods: list[tuple[datetime, dict[str, EnvMetrics]]]) -> list[KeyChart]:
    """The four keys of `env`, a bar a period."""
    labels = [since.strftime("%d %b") for since, _ in periods]
    ms = [m[env] for _, m in periods]

    def chart(caption: str, title: str, values: list[float | None], fmt: Format,
              scale: Ticks = ticks) -> KeyChart:
        return KeyChart(caption, bar_chart(f"{env}: {title}", [
            Bar(label, value) for label, value in zip(labels, values)], fmt=fmt, scale=scale,
            width=CHART_WIDTH, height=CHART_HEIGHT))

    return [
        chart("Deployment frequency: succeeded deploys a week", "deploys a week",
              [m.deployment_frequency.deploys for m in ms], _count),
        chart("Lead time for changes: median, commit to live", "median lead time a week",
              [m.lead_time.median_seconds for m in ms], human, duration_ticks),
        chart("Change failure rate: deploys failed, rolled back or undone by an alert",
              "change failure rate a week",
              [None if m.change_failure_rate.rate is None else m.change_failure_rate.rate * 100
               for m in ms], _percent),
        chart("Time to restore: median, failure to the next healthy change",
              "median time to restore a week", [m.time_to_restore.median_seconds for m in ms],
              human, duration_ticks),
    ]


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    team = query.get("team", "").strip() or None
    try:
        s = scope(console.platform, None, None, team, f"{WEEKS * 7}d")
    except CliError as e:
        raise Problem(str(e).replace("--team", "team"), 400) from None
    client = await console.client.get()
    until = datetime.now(timezone.utc)
    since = until - WEEKS * WEEK
    rows, known = await changes(client, s, since)
    periods = per_period(rows, s.envs, until, WEEK, WEEKS, s.alerts_identity, s.team, known)
    return {"title": "DORA metrics", "team": team or "", "weeks": WEEKS, "since": since,
            "teams": sorted({r.team for r in rows if r.team} | ({team} if team else set())),
            "envs": s.envs, "totals": compute(rows, s.envs, since, until, s.alerts_identity,
                                              s.team, known),
            "charts": {env: key_charts(env, periods) for env in s.envs}, "human": human}


PAGE = Page("/dora", "dora.html", data)
