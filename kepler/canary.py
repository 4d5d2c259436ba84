"""What the Canary workflow, its analysis activity and the CLI exchange, and the pure
rules that turn one analysis round's numbers into a verdict (deterministic: the
workflow calls `evaluate`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kepler.models import CanaryProgress, CheckStatus, MetricCheck, Model, Outcome, StepRecord, UserName
from kepler.spec import ServiceSpec
from kepler.payloads import EnvironmentPolicy
from kepler.identity import SignedStatement

Verdict = Literal["passed", "failed", "halt", "inconclusive"]


class CanaryControl(Model):
    """The argument of the pause, resume, promote and abort updates: a signed statement of
    the verb for exactly the running run (kepler.clients.operations.control_statement), by
    a person the canary allows (workflows/common/canary_controls.py). `by` names them; runs
    from before signed controls took it as typed."""
    by: UserName
    reason: str = Field("", max_length=500)
    signed: SignedStatement | None = None


class CanaryAnalysis(Model):
    """One analysis round: every check's query against the canary workload."""
    env: str
    namespace: str
    service: str
    workload: str
    interval: str  # a Prometheus duration, the rate window
    metrics: list[MetricCheck]


class MetricValue(Model):
    name: str
    value: float | None  # None: the query returned no data
    query: str = ""


class AnalysisResult(Model):
    values: list[MetricValue]


class CanaryState(Model):
    """Everything a canary carries across continue-as-new."""
    progress: CanaryProgress
    policy: EnvironmentPolicy
    spec: ServiceSpec
    commit: str
    version: str
    image: str
    previous_image: str
    started_at: datetime
    deadline: datetime
    steps: list[StepRecord] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    approvals: list[SignedStatement] = Field(default_factory=list)  # the gate's, signed
    hooks_ran: bool = False  # its pre_deploy hook ran: its undo is in the saga
    committed_at: datetime | None = None  # the commit's time (lead time: kepler metrics)
    break_glass: str = ""  # the reason, when it went through a freeze (kepler/freeze.py)
    seal: str = ""  # the worker's (activities/authority.py): only its own chain carries it on


class CanaryReport(Model):
    service: str
    env: str
    outcome: Outcome
    strategy: Literal["canary", "blue-green"] = "canary"
    commit: str = ""
    image: str = ""
    previous_image: str = ""
    weight: int = 0
    failed_checks: int = 0
    checks: list[CheckStatus] = Field(default_factory=list)
    runs: int = 1
    error: str = ""
    undone: list[str] = Field(default_factory=list)
    approved_by: list[str] = Field(default_factory=list)


def threshold_text(check: MetricCheck) -> str:
    if check.min is not None and check.max is not None:
        return f"{check.min:g}..{check.max:g}"
    return f">= {check.min:g}" if check.min is not None else f"<= {check.max:g}"


def new_checks(metrics: list[MetricCheck]) -> list[CheckStatus]:
    return [CheckStatus(name=m.name, threshold=threshold_text(m)) for m in metrics]


def _out_of_range(check: MetricCheck, value: float) -> str:
    if check.min is not None and value < check.min:
        return f"{check.name} {value:.2f} < {check.min:g}"
    if check.max is not None and value > check.max:
        return f"{check.name} {value:.2f} > {check.max:g}"
    return ""


def evaluate(progress: CanaryProgress, metrics: list[MetricCheck], result: AnalysisResult | None,
             error: str, no_data: str, query_error_limit: int) -> tuple[Verdict, str]:
    """Record one round in `progress` (last values, failures) and return its verdict with
    a one-line detail. `result` is None when the queries failed after their retries."""
    by_name = {c.name: c for c in progress.checks}
    if result is None:
        progress.query_errors += 1
        for status in progress.checks:
            status.last_result, status.last_value = "error", None
        if progress.query_errors < query_error_limit:
            return "inconclusive", (f"queries failed ({progress.query_errors} of "
                                    f"{query_error_limit} rounds allowed): {error}")
        return "failed", f"queries failed {progress.query_errors} rounds in a row: {error}"
    progress.query_errors = 0
    values = {v.name: v.value for v in result.values}
    failed, halted, skipped = [], [], []
    for check in metrics:
        status = by_name[check.name]
        value = values.get(check.name)
        status.last_value = value
        if value is None:
            status.last_result = "no_data" if no_data != "skip" else "skipped"
            if no_data == "fail":
                status.failures += 1
                failed.append(f"{check.name}: no data")
            elif no_data == "halt":
                halted.append(check.name)
            else:
                skipped.append(check.name)
            continue
        problem = _out_of_range(check, value)
        status.last_result = "failed" if problem else "passed"
        if problem:
            status.failures += 1
            failed.append(problem)
    if failed:
        return "failed", "; ".join(failed)
    if halted:
        return "halt", f"no data for {', '.join(halted)} (no-data policy: halt)"
    detail = ", ".join(f"{n} {values[n]:.2f}" for n in values if values[n] is not None)
    if skipped:
        detail += f" (no data, skipped: {', '.join(skipped)})"
    return "passed", detail.strip()


def failure_counts(progress: CanaryProgress) -> str:
    """Which checks failed how often, for the message of a canary that hit its limit."""
    def last(value: float | None) -> str:
        return "no data" if value is None else f"{value:.2f}"
    return "; ".join(f"{c.name} failed {c.failures}x (threshold {c.threshold}, last "
                     f"{last(c.last_value)})" for c in progress.checks if c.failures)


def failed_round(progress: CanaryProgress, notes: list[str], where: str, detail: str) -> bool:
    """Record one failed analysis round (at `where`); True once the failure limit is reached."""
    progress.failed_checks += 1
    progress.last_failure = detail
    notes.append(f"round {progress.rounds} at {where} failed: {detail}")
    return progress.failed_checks >= progress.failure_limit
