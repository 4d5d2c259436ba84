"""Freezes through Temporal: the ad-hoc freeze running on an environment (`freeze@<env>`,
asked through its `freeze` query, so only a running Freeze workflow that verified its
signed request counts), what is in force now with the platform's windows, `kepler
unfreeze` and `kepler freeze list`. The CLI, the workflows' activity and tests share it."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from kepler import cron
from kepler.freeze import (
    ActiveFreeze, EnvironmentFreeze, FreezeWindow, UnfreezeRequest, freeze_workflow_id, in_force,
)
from kepler.identity import Statement
from kepler.models import Model
from kepler.contracts import FREEZE, FREEZE_IN_FORCE, UNFREEZE
from kepler.clients.operations import Refused, query, update
from kepler.clients.temporal import execution_info
from kepler.settings import Platform

FREEZE_WORKFLOW = FREEZE.workflow


class FreezeLookupError(Exception):
    """Temporal could not say whether the environment is frozen (retry; never assume open)."""


async def is_running(client: Client, env: str) -> bool:
    try:
        info = await execution_info(client, freeze_workflow_id(env))
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise FreezeLookupError(f"describe {freeze_workflow_id(env)}: {e.message}") from None
    return info.status == WorkflowExecutionStatus.RUNNING and info.type.name == FREEZE_WORKFLOW


async def adhoc_freezes(client: Client, env: str) -> list[ActiveFreeze]:
    """The ad-hoc freeze in force on `env`, as its own workflow says ([] when none)."""
    if not await is_running(client, env):
        return []
    try:
        return await query(client.get_workflow_handle(freeze_workflow_id(env)), FREEZE_IN_FORCE)
    except (RPCError, WorkflowQueryFailedError) as e:
        if not await is_running(client, env):  # it ended meanwhile
            return []
        raise FreezeLookupError(f"query {freeze_workflow_id(env)}: {e}") from None


async def current(client: Client, platform: Platform, env: str, now: datetime) -> ActiveFreeze | None:
    """The freeze in force on `env` at `now`: a platform window or an ad-hoc freeze."""
    return in_force(platform.freeze.get(env), await adhoc_freezes(client, env), env, now)


async def unfreeze(client: Client, env: str, req: UnfreezeRequest) -> str:
    """The `unfreeze` update of the ad-hoc freeze running on `env` (its validator checks
    the signature, the run and who may); Refused when none runs or it says no."""
    handle = client.get_workflow_handle(freeze_workflow_id(env))
    return await update(handle, UNFREEZE, req, "no ad-hoc freeze is running")


async def running_freeze(client: Client, env: str) -> ActiveFreeze:
    """The ad-hoc freeze an unfreeze is for; Refused when there is none."""
    found = await adhoc_freezes(client, env)
    if not found:
        raise Refused(f"{freeze_workflow_id(env)}: no ad-hoc freeze is running on {env} "
                      "(windows in kepler.yaml end on their own; --break-glass goes through them)")
    return found[0]


def unfreeze_statement(freeze: ActiveFreeze, comment: str, now: datetime) -> Statement:
    """What `kepler unfreeze` signs: this freeze's run and nothing else."""
    return Statement(action="request", operation="unfreeze", service="*", env=freeze.env,
                     workflow_id=freeze_workflow_id(freeze.env), run_id=freeze.run_id,
                     comment=comment, issued_at=now)


class ListedFreeze(Model):
    """One line of `kepler freeze list`."""
    env: str
    kind: str  # window | ad-hoc
    name: str
    reason: str
    schedule: str = ""  # a window's cron and duration, or dates
    active: bool = False
    since: datetime | None = None
    until: datetime | None = None  # when it ends, if in force
    next_start: datetime | None = None  # a window not in force: its next start (within a year)
    by: str = ""


def _windows(env: str, config: EnvironmentFreeze, now: datetime) -> list[ListedFreeze]:
    rows = []
    for w in config.windows:
        span = w.active_at(now)
        row = ListedFreeze(env=env, kind="window", name=w.name, reason=w.reason,
                           schedule=w.describe(), active=span is not None,
                           since=span[0] if span else None, until=span[1] if span else None)
        if span is None:
            row.next_start = _next_start(w, now)
        rows.append(row)
    return rows


def _next_start(w: FreezeWindow, now: datetime) -> datetime | None:
    if w.cron is None:
        return w.start if w.start is not None and w.start > now else None
    return next(cron.fires(w.cron, now, now + timedelta(days=366)), None)


async def listing(client: Client, platform: Platform, envs: list[str],
                  now: datetime) -> list[ListedFreeze]:
    """Every freeze of `envs`: the platform's windows, then ad-hoc freezes running."""
    rows: list[ListedFreeze] = []
    for env in envs:
        config = platform.freeze.get(env)
        if config is not None:
            rows += _windows(env, config, now)
        for f in await adhoc_freezes(client, env):
            rows.append(ListedFreeze(env=env, kind="ad-hoc", name=f.name, reason=f.reason,
                                     active=f.since <= now < f.until, since=f.since,
                                     until=f.until, by=f.by))
    return rows

