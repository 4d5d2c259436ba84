"""`--watch`: a live view of a workflow's `status` query until it ends."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from kepler.clients import operations as operations_client
from kepler.models import CanaryProgress, OperationStatus
from kepler.contracts import STATUS
from starter.cli_common import console

MARKS = {"done": "[green]✔[/green]", "failed": "[red]✘[/red]", "running": "[yellow]…[/yellow]",
         "skipped": "[dim]–[/dim]", "undone": "[magenta]↺[/magenta]"}


def render(status: OperationStatus) -> Group:
    title = (f"{status.operation.value} {status.service}"
             + (f"@{status.env}" if status.env else "")
             + (f" {status.version}" if status.version else "")
             + f" — {status.stage} ({status.outcome})")
    table = Table(title=title, show_header=True, header_style="bold", expand=False)
    table.add_column("")
    table.add_column("step")
    table.add_column("took", justify="right")
    table.add_column("detail", overflow="fold", max_width=80)
    for step in status.steps:
        took = ""
        if step.finished_at:
            took = f"{(step.finished_at - step.started_at).total_seconds():.1f}s"
        table.add_row(MARKS.get(step.outcome, step.outcome), step.name, took, step.detail)
    parts: list[Any] = [table]
    if status.canary is not None:
        parts.append(canary_table(status.canary))
    if status.pending_approval:
        p = status.pending_approval
        parts.append(Text(f"waiting for approval by one of {', '.join(p.approvers)} "
                          f"(not {p.requested_by}) until {p.deadline:%Y-%m-%d %H:%M} UTC; "
                          f"{len(p.approvals)}/{p.min_approvals} given", style="yellow"))
    if status.undone:
        parts.append(Text("undone: " + ", ".join(status.undone), style="magenta"))
    if status.error:
        parts.append(Text(status.error, style="red"))
    for note in status.notes:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def canary_table(c: CanaryProgress) -> Table:
    paused = f", paused by {c.paused_by}" if c.paused else ""
    title = (f"canary {c.weight}% (step {c.step}/{len(c.weights)}: {c.weights}), failed checks "
             f"{c.failed_checks}/{c.failure_limit}{paused}"
             + (f", run {c.run}" if c.run > 1 else ""))
    table = Table(title=title, caption=c.waiting_on or None, show_header=True,
                  header_style="bold", expand=False)
    for col in ("check", "threshold", "last", "result", "failures"):
        table.add_column(col)
    for check in c.checks:
        last = "" if check.last_value is None else f"{check.last_value:.2f}"
        table.add_row(check.name, check.threshold, last, check.last_result, str(check.failures))
    return table


async def watch(handle: WorkflowHandle, interval: float = 0.5) -> OperationStatus | None:
    """Show the status until the workflow closes; returns the last status seen. The
    caller awaits `handle.result()` afterwards for the outcome."""
    last: OperationStatus | None = None
    result = asyncio.ensure_future(handle.result())
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            finished = result.done()
            try:
                last = await operations_client.query(handle, STATUS)
                live.update(render(last))
            except RPCError:
                pass  # not picked up yet, or no worker for a moment
            if finished:
                break
            await asyncio.wait([result], timeout=interval)
    if not result.cancelled():
        result.exception()  # retrieved here; the caller reads it again from the handle
    return last
