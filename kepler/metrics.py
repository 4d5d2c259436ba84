"""The four DORA metrics (`kepler metrics`), per environment, from the operations Temporal's
visibility lists: pure functions over rows, so every figure is checked exactly.

- a *deploy* is a release (a train's member, a scheduled release and a promotion are
  releases too) or a canary that ended succeeded (a canary: promoted), failed or rolled_back;
- deployment frequency: succeeded deploys in the window, and per day;
- lead time for changes: from the commit's time (GitLab's committed_date) to the end of
  the succeeded deploy that made it live (median);
- change failure rate: deploys that ended failed or rolled_back, or that a rollback
  started by the alerts identity (kepler.yaml `alerts.identity`) undid, over all deploys;
  a rollback is the alerts' only if its signed request verifies as theirs (`signed_by`:
  the reader checks the run's start input), never because it names them;
- time to restore: from a failure — the end of a failed or rolled-back deploy, or the start
  of an alert's rollback — to the end of the next succeeded deploy or rollback of that
  service in that environment (median); failures meanwhile belong to the same incident.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterable

from pydantic import Field

from kepler.validation import MAX_DURATION, parse_duration
from kepler.workloads import Model

DEPLOYS = ("release", "canary")  # KeplerOperation of a deploy
ROLLBACK = "rollback"
ENDED = ("succeeded", "failed", "rolled_back")  # how a deploy counts (not cancelled, rejected...)
FAILED = ("failed", "rolled_back")
MIN_WINDOW = timedelta(hours=1)
KEYS = ("deployment_frequency", "lead_time", "change_failure_rate", "time_to_restore")


class ChangeRow(Model):
    """One closed release, canary or rollback, as its search attributes and times say."""
    workflow_id: str
    run_id: str
    operation: str
    service: str
    env: str
    outcome: str
    started: datetime
    closed: datetime
    requested_by: str = ""
    commit: str = ""
    committed_at: datetime | None = None
    team: str = ""
    signed_by: str = ""  # whose signed request started it, verified for this run; '': unchecked

    @property
    def run(self) -> str:
        return f"{self.workflow_id}/{self.run_id}"


class DeploymentFrequency(Model):
    deploys: int = Field(description="succeeded deploys in the window")
    days: float = Field(description="the window's length in days")
    per_day: float


class LeadTime(Model):
    median_seconds: float | None = Field(description="commit time -> live; None: no sample")
    samples: int = Field(description="succeeded deploys whose commit time is known")


class ChangeFailureRate(Model):
    failed: int
    deploys: int
    rate: float | None = Field(description="failed / deploys; None: no deploy")


class TimeToRestore(Model):
    median_seconds: float | None = Field(description="failure -> next healthy; None: none")
    restores: int = Field(description="failures restored in the window")
    unrestored: int = Field(description="failures not followed by a healthy change yet")


class EnvMetrics(Model):
    deployment_frequency: DeploymentFrequency
    lead_time: LeadTime
    change_failure_rate: ChangeFailureRate
    time_to_restore: TimeToRestore


def parse_window(text: str) -> timedelta:
    """--since: a duration such as 30d, 12h or 1d12h, from 1 hour to 90 days."""
    try:
        if text != text.strip():
            raise ValueError(f"must not have spaces or a newline around it (got {text[:40]!r})")
        value = parse_duration(text)
    except ValueError as e:
        raise ValueError(f"--since: {e}") from None
    if not isinstance(value, timedelta):  # an ISO 8601 period or a number: not a CLI form
        raise ValueError(f"--since: must be a duration such as 30d, 12h or 1d12h (got {text[:40]!r})")
    if value < MIN_WINDOW or value > MAX_DURATION:
        raise ValueError(f"--since: must be from 1h to {MAX_DURATION.days}d (got {text[:40]!r})")
    return value


def compute(rows: Iterable[ChangeRow], envs: list[str], since: datetime, until: datetime,
            alerts_identity: str, team: str | None = None,
            commit_times: dict[str, datetime] | None = None) -> dict[str, EnvMetrics]:
    """The metrics of each of `envs` over the rows that closed in [since, until];
    `commit_times` adds commits' times known from runs outside them (missing_commits)."""
    rows = list(rows)
    commit_times = {**(commit_times or {}), **_commit_times(rows)}
    rows = [r for r in rows if since <= r.closed <= until and r.env in envs]
    if team is not None:
        teams = _teams(rows)
        rows = [r for r in rows if teams.get(r.service) == team]
    days = (until - since).total_seconds() / 86400
    out = {}
    for env in envs:
        mine = sorted((r for r in rows if r.env == env), key=lambda r: r.closed)
        out[env] = _env_metrics(mine, days, alerts_identity, commit_times)
    return out


def per_period(rows: Iterable[ChangeRow], envs: list[str], until: datetime, period: timedelta,
               count: int, alerts_identity: str, team: str | None = None,
               commit_times: dict[str, datetime] | None = None,
               ) -> list[tuple[datetime, dict[str, EnvMetrics]]]:
    """compute() over `count` consecutive windows of `period`, the last ending at `until`:
    each window's start with its metrics, oldest first. A row closed exactly at a boundary
    counts in the later window only. As with one window, an incident counts where its
    failure and its restore fall: one open at a window's end is unrestored there."""
    rows = list(rows)
    out = []
    for k in range(count, 0, -1):
        since = until - period * k
        end = since + period
        mine = rows if k == 1 else [r for r in rows if r.closed < end]
        out.append((since, compute(mine, envs, since, end, alerts_identity, team, commit_times)))
    return out


def _env_metrics(rows: list[ChangeRow], days: float, alerts_identity: str,
                 commit_times: dict[str, datetime]) -> EnvMetrics:
    deploys = [r for r in rows if r.operation in DEPLOYS and r.outcome in ENDED]
    succeeded = [r for r in deploys if r.outcome == "succeeded"]
    undone_by_alert = _undone_by_alerts(rows, alerts_identity)
    failed = [r for r in deploys if r.outcome in FAILED or r.run in undone_by_alert]
    leads = [max(0.0, (r.closed - at).total_seconds()) for r in succeeded
             if (at := r.committed_at or commit_times.get(r.commit)) is not None]
    restores, unrestored = _restores(rows, alerts_identity)
    return EnvMetrics(
        deployment_frequency=DeploymentFrequency(
            deploys=len(succeeded), days=round(days, 4),
            per_day=round(len(succeeded) / days, 4) if days else 0.0),
        lead_time=LeadTime(median_seconds=_median(leads), samples=len(leads)),
        change_failure_rate=ChangeFailureRate(
            failed=len(failed), deploys=len(deploys),
            rate=round(len(failed) / len(deploys), 4) if deploys else None),
        time_to_restore=TimeToRestore(median_seconds=_median(restores), restores=len(restores),
                                      unrestored=unrestored))


def _alert_rollbacks(rows: list[ChangeRow], alerts_identity: str) -> list[ChangeRow]:
    return [r for r in rows if r.operation == ROLLBACK and r.signed_by == alerts_identity]


def _undone_by_alerts(rows: list[ChangeRow], alerts_identity: str) -> set[str]:
    """The succeeded deploys an alert's rollback undid: of the same service, the last
    healthy change (deploy or rollback) that ended before the alert's rollback started,
    when that change is a deploy."""
    undone = set()
    for rollback in _alert_rollbacks(rows, alerts_identity):
        before = [r for r in rows if r.service == rollback.service and r.outcome == "succeeded"
                  and r.closed <= rollback.started and r.run != rollback.run
                  and (r.operation in DEPLOYS or r.operation == ROLLBACK)]
        if before and before[-1].operation in DEPLOYS:  # rows are sorted by their end
            undone.add(before[-1].run)
    return undone


def _restores(rows: list[ChangeRow], alerts_identity: str) -> tuple[list[float], int]:
    """(seconds from each incident's first failure to the next healthy change, incidents
    still open), per service."""
    events: dict[str, list[tuple[datetime, int, bool]]] = defaultdict(list)  # (at, order, healthy)
    for r in rows:
        if r.operation in DEPLOYS and r.outcome in FAILED:
            events[r.service].append((r.closed, 0, False))
        elif r.operation in DEPLOYS + (ROLLBACK,) and r.outcome == "succeeded":
            events[r.service].append((r.closed, 1, True))
    for r in _alert_rollbacks(rows, alerts_identity):
        events[r.service].append((r.started, 0, False))
    durations, unrestored = [], 0
    for service_events in events.values():
        failing_since: datetime | None = None
        for at, _, healthy in sorted(service_events):
            if not healthy and failing_since is None:
                failing_since = at
            elif healthy and failing_since is not None:
                durations.append((at - failing_since).total_seconds())
                failing_since = None
        unrestored += failing_since is not None
    return durations, unrestored


def _commit_times(rows: list[ChangeRow]) -> dict[str, datetime]:
    """Each commit's time, from any run that recorded it: a promotion and a train's member
    release a commit resolved before, and take its time from that run."""
    return {r.commit: r.committed_at for r in rows if r.commit and r.committed_at is not None}


def missing_commits(rows: Iterable[ChangeRow]) -> set[str]:
    """Commits of succeeded deploys whose time no row records (to look up elsewhere)."""
    rows = list(rows)
    known = _commit_times(rows)
    return {r.commit for r in rows if r.operation in DEPLOYS and r.outcome == "succeeded"
            and r.commit and r.committed_at is None and r.commit not in known}


def _teams(rows: list[ChangeRow]) -> dict[str, str]:
    """Each service's team, as its latest release or canary recorded it (the spec's team)."""
    teams = {}
    for r in sorted(rows, key=lambda r: r.closed):
        if r.team:
            teams[r.service] = r.team
    return teams


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def as_json(metrics: dict[str, EnvMetrics]) -> dict[str, Any]:
    """`kepler metrics --output json`: per environment, exactly the four keys."""
    return {env: m.model_dump(mode="json") for env, m in metrics.items()}


# --- Prometheus text exposition (kepler metrics serve) -------------------------------------

# (name, help, value of an environment's metrics or None to leave the sample out)
SERIES: tuple[tuple[str, str, Any], ...] = (
    ("kepler_dora_deployments", "Succeeded deploys (releases, promoted canaries) in the window",
     lambda m: m.deployment_frequency.deploys),
    ("kepler_dora_deployment_frequency_per_day", "Succeeded deploys per day over the window",
     lambda m: m.deployment_frequency.per_day),
    ("kepler_dora_lead_time_seconds", "Median time from commit to live, succeeded deploys",
     lambda m: m.lead_time.median_seconds),
    ("kepler_dora_lead_time_samples", "Succeeded deploys whose commit time is known",
     lambda m: m.lead_time.samples),
    ("kepler_dora_change_failures", "Deploys that failed, were rolled back or undone by an alert",
     lambda m: m.change_failure_rate.failed),
    ("kepler_dora_deploys_ended", "Deploys that ended succeeded, failed or rolled back",
     lambda m: m.change_failure_rate.deploys),
    ("kepler_dora_change_failure_rate", "Failed deploys over all deploys in the window",
     lambda m: m.change_failure_rate.rate),
    ("kepler_dora_time_to_restore_seconds", "Median time from a failure to the next healthy change",
     lambda m: m.time_to_restore.median_seconds),
    ("kepler_dora_restores", "Failures restored in the window", lambda m: m.time_to_restore.restores),
    ("kepler_dora_unrestored_failures", "Failures not followed by a healthy change yet",
     lambda m: m.time_to_restore.unrestored),
)
WINDOW_SERIES = "kepler_dora_window_seconds"
EXPORTED = tuple(name for name, _, _ in SERIES) + (WINDOW_SERIES,)


def prometheus_text(metrics: dict[str, EnvMetrics], window: timedelta) -> str:
    """The metrics in Prometheus' text exposition format (version 0.0.4), a gauge each,
    labelled by environment."""
    lines = []
    for name, help_text, value_of in SERIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for env, m in sorted(metrics.items()):
            value = value_of(m)
            if value is not None:
                lines.append(f'{name}{{env="{env}"}} {float(value)!r}')
    lines += [f"# HELP {WINDOW_SERIES} The window the DORA metrics cover (--since)",
              f"# TYPE {WINDOW_SERIES} gauge", f"{WINDOW_SERIES} {window.total_seconds()!r}"]
    return "\n".join(lines) + "\n"
