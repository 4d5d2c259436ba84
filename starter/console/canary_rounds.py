"""A canary's analysis rounds over time, for its charts.

The canary's `status` keeps each check's last value only (kepler/models.py CheckStatus);
every round's values are in the workflow's event history, as the results of its
`prometheus.analyse` activities, and its thresholds in the request it was started with.
So they are read from there: the run's history, then the runs it continued from (a long
canary continues-as-new), newest first, up to MAX_RUNS. A closed run's rounds never
change: they are kept once read."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from kepler.canary import AnalysisResult
from kepler.models import CanaryRequest, MetricCheck

ANALYSE = "prometheus.analyse"  # the analysis activity's type (activities/prometheus.py)
MAX_RUNS = 5  # 100 rounds a run by default (CanaryRequest.rounds_per_run)
KEPT_RUNS = 256


@dataclass(frozen=True)
class Round:
    at: datetime  # when the analysis returned
    values: dict[str, float | None]  # by check name; None: the query had no data


@dataclass
class RunRounds:
    request: CanaryRequest | None
    rounds: list[Round]
    continued_from: str  # the previous run's id, "" for the first


@dataclass
class Rounds:
    metrics: list[MetricCheck] = field(default_factory=list)  # the checks, with thresholds
    rounds: list[Round] = field(default_factory=list)  # oldest first
    runs: int = 0  # runs read
    earlier: bool = False  # runs before those not read (more than MAX_RUNS)
    unreadable: str = ""  # why the history could not be read, if it could not


_closed: OrderedDict[str, RunRounds] = OrderedDict()  # by run id


def _at(event: object) -> datetime:
    return event.event_time.ToDatetime(tzinfo=timezone.utc)  # type: ignore[attr-defined]


async def read_run(client: Client, workflow_id: str, run_id: str) -> RunRounds:
    """One run's request and analysis rounds, from its event history."""
    request, rounds, previous = None, [], ""
    analyses: set[int] = set()
    async for event in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events():
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = event.workflow_execution_started_event_attributes
            previous = started.continued_execution_run_id
            try:
                [request] = await client.data_converter.decode(started.input.payloads[:1],
                                                               [CanaryRequest])
            except (ValueError, TypeError):  # not a canary's: no thresholds to draw
                request = None
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == ANALYSE:
                analyses.add(event.event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in analyses:
                [result] = await client.data_converter.decode(done.result.payloads[:1],
                                                              [AnalysisResult])
                rounds.append(Round(at=_at(event), values={v.name: v.value for v in result.values}))
    return RunRounds(request=request, rounds=rounds, continued_from=previous)


async def analysis_rounds(client: Client, workflow_id: str, run_id: str, running: bool) -> Rounds:
    """The rounds of the canary run `run_id` and of the runs it continued from."""
    out, runs, current, closed = Rounds(), [], run_id, not running
    try:
        while current and len(runs) < MAX_RUNS:
            run = _closed.get(current)
            if run is None:
                run = await read_run(client, workflow_id, current)
                if closed:
                    _closed[current] = run
                    while len(_closed) > KEPT_RUNS:
                        _closed.popitem(last=False)
            runs.append(run)
            current, closed = run.continued_from, True  # a run continued from has closed
    except RPCError as e:
        out.unreadable = f"the canary's history could not be read: {e.message}"
    out.runs, out.earlier = len(runs), bool(current)
    out.rounds = [r for run in reversed(runs) for r in run.rounds]
    request = next((run.request for run in runs if run.request is not None), None)
    out.metrics = request.effective_metrics() if request is not None else []
    return out
