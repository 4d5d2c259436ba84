"""`kepler audit SERVICE [--env ENV]`: who requested and who approved which digest and
commit, when, through which channel — from Temporal history, every signature verified
again against the platform's allowed signers now (kepler/audit.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional

import typer
from rich.table import Table
from temporalio.client import Client

from kepler.audit import AuditRow, Signed, row
from kepler.identity import AllowedSigners
from kepler.models import ApprovalDecision
from kepler.contracts import BY_WORKFLOW
from kepler.settings import ConfigError, Platform
from starter import session
from starter.cli_common import BAD_INPUT, OK, CliError, command, emit, new_table
from starter.service import service_history

MAX_OPERATIONS = 200
MAX_READS = 8  # histories fetched at once


async def audit(p: Platform, service: str, env: str | None) -> list[AuditRow]:
    try:
        signers = p.signers()
    except ConfigError as e:
        raise CliError(f"{e} (the audit verifies every signature again)", BAD_INPUT) from None
    ops = (await service_history(p, service, env))[:MAX_OPERATIONS]
    return await audit_of(await session.client(p), ops, signers)


@dataclass(frozen=True)
class RunRecord:
    """What one run's history holds for its audit: its operation (by workflow type), the
    start input (the request), the accepted approve/reject updates and the result."""
    operation: str
    request: Any
    decisions: list[ApprovalDecision]
    report: Any
    started: datetime
    parent: str


ReadRun = Callable[[Client, dict[str, str]], Awaitable["RunRecord | None"]]


async def audit_of(client: Client, ops: list[dict[str, str]], signers: AllowedSigners,
                   read: ReadRun | None = None) -> list[AuditRow]:
    """The audit rows of `ops` (rows of starter/service.py operations_of, in their order),
    with a connected client; `read` fetches a run's record (default: read_run; the console
    keeps closed runs' records)."""
    limit = asyncio.Semaphore(MAX_READS)

    async def one(op: dict[str, str]) -> AuditRow | None:
        async with limit:
            run = await (read or read_run)(client, op)
        return audit_row(op, run, signers) if run is not None else None

    return [r for r in await asyncio.gather(*(one(op) for op in ops)) if r is not None]


async def read_run(client: Client, op: dict[str, str]) -> RunRecord | None:
    """`op`'s run as its history records it; None for a workflow type with no contract."""
    history = await client.get_workflow_handle(op["workflow_id"], run_id=op["run_id"]).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    kind = BY_WORKFLOW.get(started.workflow_type.name)
    if kind is None:
        return None
    convert = client.data_converter
    request = (await convert.decode(started.input.payloads[:1], [kind.request]))[0]
    decisions, report = [], None
    for event in history.events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            update = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
            if update.name in ("approve", "reject"):
                decisions += await convert.decode(update.args.payloads, [ApprovalDecision])
        elif event.HasField("workflow_execution_completed_event_attributes"):
            result = event.workflow_execution_completed_event_attributes.result.payloads
            report = (await convert.decode(result, [kind.result]))[0] if result else None
    started_at = history.events[0].event_time.ToDatetime().replace(tzinfo=timezone.utc)
    return RunRecord(kind.operation, request, decisions, report, started_at,
                     started.parent_workflow_execution.workflow_id)


def audit_row(op: dict[str, str], run: RunRecord, signers: AllowedSigners) -> AuditRow:
    """`op`'s audit row: every signature in `run` verified again against `signers`."""
    return row(op["workflow_id"], op["run_id"], run.operation, op["env"], run.started,
               run.request, run.decisions, run.report, signers, run.parent).model_copy(
        update={"outcome": op["outcome"] or (run.report.outcome if run.report else "")})


def _who(s: Signed | None, typed: str = "") -> str:
    if s is None:
        return f"{typed} (unsigned)"
    mark = "✓" if s.verified else f"✗ {s.problem}"
    return f"{s.who}" + (f" via {s.channel}" if s.channel not in ("cli", "system") else "") + f" {mark}"


def table(rows: list[AuditRow]) -> Table:
    t = new_table(show_header=True)
    for col in ("started", "operation", "env", "requested by", "decided by", "digest", "commit",
                "outcome"):
        t.add_column(col)
    for r in rows:
        decided = "\n".join(f"{d.action} {_who(d)}" for d in r.decisions) or "-"
        operation = r.operation + (f"\nBREAK-GLASS: {r.break_glass}" if r.break_glass else "")
        t.add_row(r.started.isoformat()[:19], operation, r.env, _who(r.request, r.requested_by),
                  decided, "\n".join(d.rsplit("@", 1)[-1][:19] for d in r.digests) or "-",
                  "\n".join(c[:12] for c in r.commits) or "-", r.outcome)
    return t


def register(app: typer.Typer) -> None:
    @command(app, "audit")
    def audit_cmd(service: str, env: Optional[str] = typer.Option(None, "--env", "-e"),
                  *, as_json: bool) -> int:
        """Who requested and who approved which digest and commit on SERVICE, each
        signature verified again (newest first)."""
        p = session.platform()
        session.check_service(service)
        if env:
            session.check_env(p, env)
        rows = session.run(audit(p, service, env))
        data: Any = [r.model_dump(mode="json") for r in rows]
        emit(data, as_json, None if as_json else table(rows))
        return OK
