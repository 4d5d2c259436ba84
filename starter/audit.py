"""`kepler audit SERVICE [--env ENV]`: who requested and who approved which digest and
commit, when, through which channel — from Temporal history, every signature verified
again against the platform's allowed signers now (kepler/audit.py)."""

from __future__ import annotations

from datetime import timezone
from typing import Any, Optional

import typer
from rich.table import Table
from temporalio.client import Client

from kepler.audit import AuditRow, Signed, row
from kepler.identity import AllowedSigners
from kepler.models import ApprovalDecision
from kepler.contracts import BY_WORKFLOW
from kepler.settings import ConfigError, Platform
from starter import session
from starter.cli_common import BAD_INPUT, OK, CliError, command, emit
from starter.service import service_history

MAX_OPERATIONS = 200


async def audit(p: Platform, service: str, env: str | None) -> list[AuditRow]:
    try:
        signers = p.signers()
    except ConfigError as e:
        raise CliError(f"{e} (the audit verifies every signature again)", BAD_INPUT) from None
    client = await session.client(p)
    rows = []
    for op in (await service_history(p, service, env))[:MAX_OPERATIONS]:
        one = await _row(client, op, signers)
        if one is not None:
            rows.append(one)
    return rows


async def _row(client: Client, op: dict[str, str], signers: AllowedSigners) -> AuditRow | None:
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
    parent = started.parent_workflow_execution.workflow_id
    return row(op["workflow_id"], op["run_id"], kind.operation, op["env"], started_at,
               request, decisions, report, signers, parent).model_copy(
        update={"outcome": op["outcome"] or (report.outcome if report else "")})


def _who(s: Signed | None, typed: str = "") -> str:
    if s is None:
        return f"{typed} (unsigned)"
    mark = "✓" if s.verified else f"✗ {s.problem}"
    return f"{s.who}" + (f" via {s.channel}" if s.channel not in ("cli", "system") else "") + f" {mark}"


def table(rows: list[AuditRow]) -> Table:
    t = Table(show_header=True, header_style="bold")
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
