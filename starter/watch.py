"""`--watch`: a live view of a workflow's `status` query until it ends; off a terminal
(a pipe, a file, a CI log), the same news line by line, each written once."""

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
from kepler.models import CanaryProgress, OperationStatus, StepRecord
from kepler.contracts import STATUS
from starter.cli_common import console, new_table, plain

MARKS = {"done": "[green]✔[/green]", "failed": "[red]✘[/red]", "running": "[yellow]…[/yellow]",
         "skipped": "[dim]–[/dim]", "undone": "[magenta]↺[/magenta]"}


def heading(status: OperationStatus) -> str:
    return (f"{status.operation.value} {status.service}"
            + (f"@{status.env}" if status.env else "")
            + (f" {status.version}" if status.version else ""))


def took(step: StepRecord) -> str:
    if not step.finished_at:
        return ""
    return f"{(step.finished_at - step.started_at).total_seconds():.1f}s"


def approval_wait(status: OperationStatus) -> str:
    p = status.pending_approval
    if p is None:
        return ""
    return (f"waiting for approval by one of {', '.join(p.approvers)} (not {p.requested_by}) "
            f"until {p.deadline:%Y-%m-%d %H:%M} UTC; {len(p.approvals)}/{p.min_approvals} given")


def render(status: OperationStatus) -> Group:
    table = new_table(f"{heading(status)} — {status.stage} ({status.outcome})",
                      show_header=True, expand=False)
    table.add_column("")
    table.add_column("step")
    table.add_column("took", justify="right")
    table.add_column("detail", overflow="fold", max_width=80)
    for step in status.steps:
        mark = step.outcome if plain() else MARKS.get(step.outcome, step.outcome)
        table.add_row(mark, step.name, took(step), step.detail)
    parts: list[Any] = [table]
    if status.canary is not None:
        parts.append(canary_table(status.canary))
    if status.pending_approval:
        parts.append(Text(approval_wait(status), style="yellow"))
    if status.undone:
        parts.append(Text("undone: " + ", ".join(status.undone), style="magenta"))
    if status.error:
        parts.append(Text(status.error, style="red"))
    for note in status.notes:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def canary_title(c: CanaryProgress) -> str:
    paused = f", paused by {c.paused_by}" if c.paused else ""
    return (f"canary {c.weight}% (step {c.step}/{len(c.weights)}: {c.weights}), failed checks "
            f"{c.failed_checks}/{c.failure_limit}{paused}" + (f", run {c.run}" if c.run > 1 else ""))


def canary_table(c: CanaryProgress) -> Table:
    table = new_table(canary_title(c), caption=c.waiting_on or None, show_header=True,
                      expand=False)
    for col in ("check", "threshold", "last", "result", "failures"):
        table.add_column(col)
    for check in c.checks:
        last = "" if check.last_value is None else f"{check.last_value:.2f}"
        table.add_row(check.name, check.threshold, last, check.last_result, str(check.failures))
    return table


class LineLog:
    """Off a terminal: what the live view would redraw, as lines, each written once — the
    operation, every step as it ends (or is undone), each wait for approval, each canary
    weight, and at the end what was undone, the error and the notes."""

    def __init__(self) -> None:
        self.written: set[Any] = set()

    def write_once(self, key: Any, line: str) -> None:
        if key not in self.written:
            self.written.add(key)
            console.print(line, markup=False, highlight=False)

    def update(self, status: OperationStatus) -> None:
        self.write_once(("heading", status.operation, status.service, status.env), heading(status))
        for n, step in enumerate(status.steps):
            if step.outcome != "running":
                detail = f"  {step.detail}" if step.detail else ""
                self.write_once(("step", n, step.outcome),
                                f"  {step.outcome:<7} {step.name}  {took(step)}{detail}".rstrip())
        if status.pending_approval:
            p = status.pending_approval
            self.write_once(("approval", p.run_id, p.gate, len(p.approvals)),
                            f"  {approval_wait(status)}")
        if status.canary is not None:
            c = status.canary
            self.write_once(("canary", c.run, c.step, c.weight, c.paused, c.failed_checks),
                            f"  {canary_title(c)}")

    def end(self, status: OperationStatus) -> None:
        self.update(status)
        if status.undone:
            self.write_once("undone", "undone: " + ", ".join(status.undone))
        if status.error:
            self.write_once("error", status.error)
        for note in status.notes:
            self.write_once(("note", note), note)


async def watch(handle: WorkflowHandle, interval: float = 0.5) -> OperationStatus | None:
    """Show the status until the workflow closes; returns the last status seen. The
    caller awaits `handle.result()` afterwards for the outcome."""
    if plain():
        return await _follow(handle, interval, LineLog())
    with Live(console=console, refresh_per_second=4) as live:
        return await _follow(handle, interval, live)


async def _follow(handle: WorkflowHandle, interval: float, view: Live | LineLog,
                  ) -> OperationStatus | None:
    last: OperationStatus | None = None
    result = asyncio.ensure_future(handle.result())
    while True:
        finished = result.done()
        try:
            last = await operations_client.query(handle, STATUS)
            view.update(render(last) if isinstance(view, Live) else last)
        except RPCError:
            pass  # not picked up yet, or no worker for a moment
        if finished:
            break
        await asyncio.wait([result], timeout=interval)
    if isinstance(view, LineLog) and last is not None:
        view.end(last)
    if not result.cancelled():
        result.exception()  # retrieved here; the caller reads it again from the handle
    return last
