"""`kepler metrics [--service S] [--env E] [--team T] [--since 30d] [--output json]` and
`kepler metrics serve --port 9465`: the four DORA metrics per environment
(kepler/metrics.py), read from Temporal's visibility — one query per operation, paged —
and served to Prometheus in its text format."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import typer
from rich.table import Table
from temporalio.client import Client, WorkflowExecution

from kepler import search_attributes as sa
from kepler.audit import check_request
from kepler.identity import AllowedSigners
from kepler.metrics import (
    DEPLOYS, ROLLBACK, ChangeRow, EnvMetrics, as_json as metrics_json, compute, missing_commits,
    parse_window, prometheus_text,
)
from kepler.models import RollbackRequest
from kepler.settings import ConfigError, Platform
from kepler.validation import dns_subdomain
from starter import session
from starter.cli_common import BAD_INPUT, OK, CliError, command, emit, subject_app, new_table

MAX_ROWS = 20_000  # per operation and window: what one report or scrape reads at most
COMMITS_PER_QUERY = 50


@dataclass(frozen=True)
class Scope:
    """What a report covers, validated: environments, window and filters."""
    envs: list[str]
    window: timedelta
    service: str | None
    team: str | None
    alerts_identity: str
    signers: AllowedSigners  # an alert's rollback counts only if the alerts identity signed it


def scope(p: Platform, service: str | None, env: str | None, team: str | None, since: str) -> Scope:
    """The options, each checked before anything is read (exit 2 naming the field)."""
    if service is not None:
        session.check_service(service)
    if env is not None:
        session.check_env(p, env)
    if team is not None:
        try:
            dns_subdomain(team)
        except ValueError as e:
            raise CliError(f"--team: {e}", BAD_INPUT) from None
    try:
        window = parse_window(since)
    except ValueError as e:
        raise CliError(str(e), BAD_INPUT) from None
    try:
        signers = p.signers()
    except ConfigError as e:
        raise CliError(f"{e} (alert-driven rollbacks are counted by their signatures)", BAD_INPUT) from None
    return Scope(envs=[env] if env else sorted(p.environments), window=window, service=service,
                 team=team, alerts_identity=p.alerts.identity, signers=signers)


def _at(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def read_rows(client: Client, s: Scope, since: datetime) -> list[ChangeRow]:
    """Every release, canary and rollback closed since `since`, as visibility lists them."""
    rows = []
    for operation in (*DEPLOYS, ROLLBACK):
        query = f"{sa.OPERATION.name} = '{operation}' AND CloseTime >= '{_at(since)}'"
        if s.service:  # validated names only go into a query
            query += f" AND {sa.SERVICE.name} = '{s.service}'"
        if len(s.envs) == 1:
            query += f" AND {sa.ENV.name} = '{s.envs[0]}'"
        async for wf in client.list_workflows(query, limit=MAX_ROWS):
            row = _row(wf)
            if row is not None:
                rows.append(row)
    for row in rows:  # only those that say so: the rest are a person's anyway
        if row.operation == ROLLBACK and row.requested_by == s.alerts_identity:
            row.signed_by = await signed_by(client, row, s.signers)
    return rows


async def signed_by(client: Client, row: ChangeRow, signers: AllowedSigners) -> str:
    """Who signed the request `row`'s run was started with, verified for that run at its
    start (kepler/audit.py); '' when unsigned or it does not verify."""
    async for event in client.get_workflow_handle(row.workflow_id, run_id=row.run_id) \
            .fetch_history_events(page_size=1):
        started = event.workflow_execution_started_event_attributes
        if not started.input.payloads:
            return ""
        try:
            [request] = await client.data_converter.decode(started.input.payloads[:1],
                                                           [RollbackRequest])
        except (ValueError, TypeError):  # not a rollback's request: nobody's signature
            return ""
        checked = check_request(request, row.workflow_id, ROLLBACK, signers, row.started,
                                started.parent_workflow_execution.workflow_id)
        return checked.who if checked is not None and checked.verified else ""
    return ""


async def commit_times(client: Client, commits: set[str]) -> dict[str, datetime]:
    """The times of commits other runs recorded (a promotion's commit, released before)."""
    out: dict[str, datetime] = {}
    wanted = sorted(c for c in commits if len(c) == 40 and all(ch in "0123456789abcdef" for ch in c))
    for i in range(0, len(wanted), COMMITS_PER_QUERY):
        listed = ", ".join(f"'{c}'" for c in wanted[i:i + COMMITS_PER_QUERY])
        async for wf in client.list_workflows(f"{sa.COMMIT.name} IN ({listed})", limit=MAX_ROWS):
            attrs = wf.typed_search_attributes
            commit, at = attrs.get(sa.COMMIT), attrs.get(sa.COMMIT_TIME)
            if commit and at is not None:
                out[commit] = at
    return out


def _row(wf: WorkflowExecution) -> ChangeRow | None:
    attrs = wf.typed_search_attributes
    if wf.close_time is None or not attrs.get(sa.SERVICE) or not attrs.get(sa.ENV):
        return None
    return ChangeRow(workflow_id=wf.id, run_id=wf.run_id, operation=attrs.get(sa.OPERATION) or "",
                     service=attrs.get(sa.SERVICE) or "", env=attrs.get(sa.ENV) or "",
                     outcome=attrs.get(sa.OUTCOME) or "", started=wf.start_time,
                     closed=wf.close_time, requested_by=attrs.get(sa.REQUESTED_BY) or "",
                     commit=attrs.get(sa.COMMIT) or "", committed_at=attrs.get(sa.COMMIT_TIME),
                     team=attrs.get(sa.TEAM) or "")


async def changes(client: Client, s: Scope,
                  since: datetime) -> tuple[list[ChangeRow], dict[str, datetime]]:
    """The rows closed since `since`, and the times of their commits other runs recorded."""
    rows = await read_rows(client, s, since)
    return rows, await commit_times(client, missing_commits(rows))


async def report(client: Client, s: Scope) -> dict[str, EnvMetrics]:
    until = datetime.now(timezone.utc)
    since = until - s.window
    rows, known = await changes(client, s, since)
    return compute(rows, s.envs, since, until, s.alerts_identity, s.team, known)


# --- text ------------------------------------------------------------------------------------

def human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def table(metrics: dict[str, EnvMetrics], s: Scope) -> Table:
    title = f"DORA metrics, last {human(s.window.total_seconds())}" + (
        f", service {s.service}" if s.service else "") + (f", team {s.team}" if s.team else "")
    t = new_table(title, show_header=True)
    for col in ("env", "deployment frequency", "lead time (median)", "change failure rate",
                "time to restore (median)"):
        t.add_column(col)
    for env, m in metrics.items():
        f, lead, cfr, ttr = (m.deployment_frequency, m.lead_time, m.change_failure_rate,
                             m.time_to_restore)
        t.add_row(env, f"{f.per_day:g}/day ({f.deploys} deploys)",
                  f"{human(lead.median_seconds)} ({lead.samples} changes)",
                  "-" if cfr.rate is None else f"{cfr.rate:.0%} ({cfr.failed} of {cfr.deploys})",
                  f"{human(ttr.median_seconds)} ({ttr.restores} restored"
                  + (f", {ttr.unrestored} still failing)" if ttr.unrestored else ")"))
    return t


# --- serve -----------------------------------------------------------------------------------

def exporter(p: Platform, s: Scope, refresh: float) -> Any:
    """An ASGI app serving GET /metrics, computed at most every `refresh` seconds."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    cache: dict[str, Any] = {"at": 0.0, "text": ""}
    lock = asyncio.Lock()

    async def metrics(_: Request) -> PlainTextResponse:
        async with lock:
            if not cache["text"] or time.monotonic() - cache["at"] >= refresh:
                try:
                    if "client" not in cache:
                        cache["client"] = await session.client(p)
                    cache["text"] = prometheus_text(await report(cache["client"], s), s.window)
                    cache["at"] = time.monotonic()
                except Exception as e:  # Temporal unreachable, say: the scrape fails, we go on
                    return PlainTextResponse(f"cannot read Temporal's visibility: {e}\n",
                                             status_code=503)
        return PlainTextResponse(cache["text"], media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/metrics", metrics)])


def register(app: typer.Typer) -> None:
    metrics_app = subject_app("DORA metrics per environment, from Temporal's history.")
    app.add_typer(metrics_app, name="metrics")
    service_opt = typer.Option(None, "--service", "-s", help="one service only")
    env_opt = typer.Option(None, "--env", "-e", help="one environment only (from kepler.yaml)")
    team_opt = typer.Option(None, "--team", help="services of this team (their spec's team)")
    since_opt = typer.Option("30d", "--since", help="the window, 1h to 90d: 30d, 12h, 1d12h")

    @command(metrics_app, callback=True, invoke_without_command=True)
    def metrics_cmd(service: Optional[str] = service_opt, env: Optional[str] = env_opt,
                    team: Optional[str] = team_opt, since: str = since_opt,
                    *, as_json: bool) -> int:
        """Deployment frequency, lead time for changes, change failure rate and time to
        restore, per environment, over --since."""
        p = session.platform()
        s = scope(p, service, env, team, since)
        metrics = session.run(_report(p, s))
        emit(metrics_json(metrics), as_json, None if as_json else table(metrics, s))
        return OK

    @command(metrics_app, "serve", output=False)
    def serve(port: int = typer.Option(9465, "--port", min=1, max=65535, help="port to listen on"),
              host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
              service: Optional[str] = service_opt, env: Optional[str] = env_opt,
              team: Optional[str] = team_opt, since: str = since_opt,
              refresh: float = typer.Option(60.0, "--refresh", min=1, max=3600,
                                            help="seconds a computation is served before the next")) -> int:
        """Serve the metrics on /metrics for Prometheus (gauges kepler_dora_*, by env)."""
        import uvicorn

        p = session.platform()
        s = scope(p, service, env, team, since)
        uvicorn.run(exporter(p, s, refresh), host=host, port=port, log_level="warning")
        return OK


async def _report(p: Platform, s: Scope) -> dict[str, EnvMetrics]:
    return await report(await session.client(p), s)
