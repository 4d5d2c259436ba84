"""The canary page, /services/{service}/{env}/canary: the running canary's state, its
traffic weight over time and each analysis check's values against its thresholds, with
the controls valid now (pause, resume, promote, abort: signed with a passkey by the
console's script, starter/console/actions.py). With no canary running: a note saying so,
and the last canary's outcome and charts when visibility finds one.

The weights come from the status' steps (each "route N% to canary" step's end); the
analysis values from the run's event history (starter/console/canary_rounds.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError

from kepler import naming
from kepler import search_attributes as sa
from kepler.clients import operations as operations_client
from kepler.contracts import CANARY, STATUS
from kepler.models import CheckStatus, MetricCheck, OperationStatus
from starter.console.app import Console, Page, Problem, service_and_env
from starter.console.auth import Viewer
from starter.console.canary_rounds import Rounds, analysis_rounds
from starter.console.charts import Series, Threshold, line_chart
from starter.service import operations_of

ROUTE_TO_CANARY = re.compile(r"^route (\d+)% to canary$")
ROUTE_TO_STABLE = "route 100% to stable"
ANALYSING = "canary "  # the stage while analysing, e.g. "canary 20%" (workflows/canary.py)


@dataclass
class CheckView:
    name: str
    threshold: str
    last_value: float | None
    last_result: str
    failures: int
    chart: Any


@dataclass
class CanaryView:
    status: OperationStatus
    run_id: str
    state: str
    controls: list[str]
    weight_chart: Any
    checks: list[CheckView]
    rounds: int  # analysis rounds read from the history
    notes: list[str] = field(default_factory=list)  # what the charts cannot show


def state_and_controls(status: OperationStatus) -> tuple[str, list[str]]:
    """What the canary is doing and the controls its validators accept now.

    The workflow's phase is not in its status: its stage says it ("canary N%" while
    analysing, "paused" once the analysis loop has seen a pause: `paused` is set at once);
    outside the analysis only an abort is taken, until the canary sends traffic back to
    stable. A control sent at the wrong moment is refused by the workflow anyway."""
    p = status.canary
    if status.outcome != "running":
        return status.outcome, []
    if p is None:  # before the canary's progress exists: reading its policy, say
        return f"preparing ({status.stage})", ["abort"]
    if status.stage == "paused" or status.stage.startswith(ANALYSING):
        if p.paused:
            return f"paused by {p.paused_by}", ["resume", "promote", "abort"]
        return "analysing", ["pause", "promote", "abort"]
    if p.waiting_on == "traffic back to stable" or status.stage == "compensating":
        return "putting traffic back to stable", []
    if status.pending_approval is not None:
        return "awaiting approval", ["abort"]
    return status.stage, ["abort"]


def weight_points(status: OperationStatus) -> list[tuple[datetime, float | None]]:
    """The canary's weight at each change, as its finished routing steps say: from 0 at
    its start (a first run; a continued run carries its last steps only)."""
    points: list[tuple[datetime, float | None]] = []
    for step in status.steps:
        if step.outcome != "done" or step.finished_at is None:
            continue
        moved = ROUTE_TO_CANARY.match(step.name)
        if moved:
            points.append((step.finished_at, float(moved.group(1))))
        elif step.name == ROUTE_TO_STABLE:
            points.append((step.finished_at, 0.0))
    first_run = status.canary is None or status.canary.run == 1
    if status.steps and first_run:
        points.insert(0, (status.steps[0].started_at, 0.0))
    return points


def thresholds_of(check: MetricCheck) -> list[Threshold]:
    return ([Threshold(f"min {check.min:g}", check.min)] if check.min is not None else []) + \
           ([Threshold(f"max {check.max:g}", check.max)] if check.max is not None else [])


def _check_views(checks: list[CheckStatus], rounds: Rounds, start: datetime | None,
                 end: datetime) -> list[CheckView]:
    metrics = {m.name: m for m in rounds.metrics}
    views = []
    for c in checks:
        points = [(r.at, r.values.get(c.name)) for r in rounds.rounds]
        metric = metrics.get(c.name)
        chart = line_chart(f"{c.name} each analysis round", [Series(c.name, points)],
                           thresholds_of(metric) if metric else [], start=start, end=end)
        views.append(CheckView(name=c.name, threshold=c.threshold, last_value=c.last_value,
                               last_result=c.last_result, failures=c.failures, chart=chart))
    return views


async def canary_view(client: Client, status: OperationStatus, workflow_id: str, run_id: str,
                      running: bool, now: datetime) -> CanaryView:
    progress = status.canary
    rounds = await analysis_rounds(client, workflow_id, run_id, running)
    weights = weight_points(status)
    times = [at for at, _ in weights] + [r.at for r in rounds.rounds]
    start = min(times) if times else None
    end = now if running else max(times, default=now)
    state, controls = state_and_controls(status) if running else (status.outcome, [])
    notes = [rounds.unreadable] if rounds.unreadable else []
    if progress is not None and progress.run > 1:
        notes.append(f"run {progress.run}: the weights shown are from the last steps "
                     "carried across continue-as-new")
    if rounds.earlier:
        notes.append(f"analysis rounds of the last {rounds.runs} runs only")
    return CanaryView(
        status=status, run_id=run_id, state=state, controls=controls,
        weight_chart=line_chart("Traffic to the canary", [Series("weight", weights)], step=True,
                                start=start, end=end, y_min=0, y_max=100, fmt=lambda v: f"{v:g}%"),
        checks=_check_views(progress.checks if progress else [], rounds, start, end),
        rounds=len(rounds.rounds),
        notes=notes)


async def _running_canary(client: Client, workflow_id: str) -> tuple[str, str]:
    """(run id of the canary running under `workflow_id` or "", what runs there instead)."""
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return "", ""
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return "", ""
    if desc.workflow_type != CANARY.workflow:
        attrs = desc.typed_search_attributes
        operation = attrs.get(sa.OPERATION) or desc.workflow_type
        return "", f"{operation} ({attrs.get(sa.STAGE) or 'running'})"
    return desc.run_id, ""


async def _status(client: Client, workflow_id: str, run_id: str) -> OperationStatus | None:
    try:
        return await operations_client.query(client.get_workflow_handle(workflow_id, run_id=run_id),
                                             STATUS)
    except (RPCError, WorkflowQueryFailedError):
        return None


async def last_canary(client: Client, workflow_id: str) -> dict[str, str] | None:
    """The last canary under `workflow_id` that ended, as visibility lists it."""
    query = (f"WorkflowId = '{workflow_id}' AND {sa.OPERATION.name} = 'canary' AND "
             "ExecutionStatus != 'Running' AND ExecutionStatus != 'ContinuedAsNew'")
    found = await operations_of(client, query, 20)
    return found[0] if found else None


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    service, env = service_and_env(console, params)
    client = await console.client.get()
    workflow_id, now = naming.workflow_id(service, env), datetime.now(timezone.utc)
    run_id, instead = await _running_canary(client, workflow_id)
    status = await _status(client, workflow_id, run_id) if run_id else None
    if run_id and status is None:
        raise Problem(f"{workflow_id}: a canary runs, but its status could not be read "
                      "(is the worker running?)", 503)
    canary = last = previous = None
    if status is not None and status.outcome == "running":
        canary = await canary_view(client, status, workflow_id, run_id, True, now)
    else:
        last = await last_canary(client, workflow_id)
        ended = await _status(client, workflow_id, last["run_id"]) if last else None
        if last and ended is not None:
            previous = await canary_view(client, ended, workflow_id, last["run_id"], False, now)
    return {"title": f"Canary of {service} in {env}", "service": service, "env": env,
            "canary": canary, "last": last, "previous": previous, "instead": instead}


PAGE = Page("/services/{service}/{env}/canary", "canary.html", data)
