"""`kepler freeze --env ENV --for 2h --reason TEXT`, `kepler freeze list` and `kepler
unfreeze --env ENV`: ad-hoc freezes (the workflow freeze@<env>) and the platform's windows
(kepler/freeze.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Optional

import typer
from rich.table import Table
from temporalio.client import Client

from kepler.clients import freezes as freeze_client

from kepler.clients import operations as operations_client
from kepler.freeze import (
    ActiveFreeze, FreezeRequest, UnfreezeRequest, freeze_workflow_id,
)
from kepler.clients.freezes import FreezeLookupError, ListedFreeze
from kepler.settings import Platform
from starter import session
from starter.cli_common import (
    BAD_INPUT, FAILED, OK, AsOpt, CliError, command, emit, subject_app, new_table,
)
from starter.signing import sign, signing_key

IN_FORCE_WITHIN_S = 30  # `kepler freeze` returns once the freeze is in force, or fails


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "-"


def _required(value: Optional[str], flag: str, what: str) -> str:
    if value is None or not value.strip():
        raise CliError(f"{flag}: {what}", BAD_INPUT)
    return value


def _build(env: str, duration: str, reason: str, requested_by: str) -> FreezeRequest:
    """The request, or exit 2 naming the flag (--for is the request's duration)."""
    try:
        return session.build(FreezeRequest, env=env, duration=duration, reason=reason,
                             requested_by=requested_by)
    except CliError as e:
        raise CliError(str(e).replace("duration: ", "--for: ").replace("reason: ", "--reason: "),
                       BAD_INPUT) from None


async def _in_force(temporal: Client, env: str) -> ActiveFreeze:
    """Wait until the freeze just started is in force (its signed request verified); a
    freeze that ended instead (refused) fails with its reason."""
    handle = temporal.get_workflow_handle(freeze_workflow_id(env))
    deadline = asyncio.get_running_loop().time() + IN_FORCE_WITHIN_S
    while asyncio.get_running_loop().time() < deadline:
        found = await freeze_client.adhoc_freezes(temporal, env)
        if found:
            return found[0]
        if not await freeze_client.is_running(temporal, env):
            state = await operations_client.status(temporal, handle.id)
            code = BAD_INPUT if state.bad_input else FAILED
            raise CliError(f"{handle.id}: not frozen: {state.error or state.outcome}", code)
        await asyncio.sleep(0.1)
    raise CliError(f"{handle.id}: not in force after {IN_FORCE_WITHIN_S} s (is the worker "
                   "running? `kepler dev status`)", FAILED)


async def start_freeze(p: Platform, req: FreezeRequest) -> ActiveFreeze:
    req = session.signed(p, req)
    temporal = await session.client(p)
    await operations_client.start(temporal, req, p.temporal.task_queue)
    try:
        return await _in_force(temporal, req.env)
    except FreezeLookupError as e:
        raise CliError(str(e), FAILED) from None


async def lift(p: Platform, env: str, user: str, comment: str) -> str:
    """Sign an unfreeze of the ad-hoc freeze running on `env` (its run only), send it and
    wait for the freeze to end."""
    temporal = await session.client(p)
    active = await freeze_client.running_freeze(temporal, env)
    statement = freeze_client.unfreeze_statement(active, comment, datetime.now(timezone.utc))
    signed = await asyncio.to_thread(sign, statement, signing_key(p, user))
    result = await freeze_client.unfreeze(temporal, env, UnfreezeRequest(
        requested_by=user, comment=comment, signed=signed))
    try:
        await temporal.get_workflow_handle(freeze_workflow_id(env), run_id=active.run_id).result()
    except Exception:  # noqa: BLE001 - it ended; its status tells how
        pass
    return result


def table(rows: list[ListedFreeze]) -> Table:
    t = new_table(show_header=True)
    for col in ("env", "kind", "name", "reason", "when", "in force", "until / next", "by"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.env, r.kind, r.name, r.reason, r.schedule or f"since {_when(r.since)}",
                  "yes" if r.active else "no", _when(r.until if r.active else r.next_start),
                  r.by or "-")
    return t


def register(app: typer.Typer) -> None:
    freeze_app = subject_app("Freeze an environment now, or list its freezes.",
                             invoke_without_command=True)

    @command(freeze_app, callback=True)
    def freeze(env: Optional[str] = typer.Option(None, "--env", "-e", help="the environment"),
               for_: Optional[str] = typer.Option(None, "--for", help="how long, e.g. 2h (1m to 7d)"),
               reason: Optional[str] = typer.Option(None, "--reason", help="why (required)"),
               as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Freeze ENV at once for a while (--for): releases, canaries, trains and scheduled
        releases are refused (exit 3) or wait; rollbacks still go. `kepler freeze list`
        shows every freeze."""
        p = session.platform()
        session.check_env(p, _required(env, "--env", "which environment to freeze"))
        req = _build(env or "", _required(for_, "--for", "how long the freeze lasts, e.g. 2h"),
                     _required(reason, "--reason", "a freeze needs a reason"),
                     session.acting_user(p, as_user))
        active = session.run(start_freeze(p, req))
        link = session.ui_link(p, active.name, active.run_id)
        emit({"workflow_id": active.name, "ui": link, "freeze": active}, as_json,
             f"[bold]{active.describe()}[/bold]\n{link}")
        return OK

    @command(freeze_app, "list")
    def list_freezes(env: Optional[str] = typer.Option(None, "--env", "-e"),
                     *, as_json: bool) -> int:
        """The platform's freeze windows (kepler.yaml) and the ad-hoc freezes running."""
        p = session.platform()
        if env:
            session.check_env(p, env)
        envs = [env] if env else sorted(p.environments)

        async def go() -> list[ListedFreeze]:
            try:
                return await freeze_client.listing(await session.client(p), p, envs,
                                                   datetime.now(timezone.utc))
            except FreezeLookupError as e:
                raise CliError(str(e), FAILED) from None

        rows = session.run(go())
        data: Any = [r.model_dump(mode="json") for r in rows]
        emit(data, as_json, None if as_json else (table(rows) if rows else "no freezes"))
        return OK

    app.add_typer(freeze_app, name="freeze")

    @command(app)
    def unfreeze(env: str = typer.Option(..., "--env", "-e", help="the environment"),
                 comment: str = typer.Option("", "--comment", help="why (kept with the freeze)"),
                 as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """End the ad-hoc freeze of ENV now: the one who froze it or one of ENV's approvers
        (windows from kepler.yaml end on their own; --break-glass goes through them)."""
        p = session.platform()
        session.check_env(p, env)
        if len(comment) > 500:
            raise CliError("--comment: at most 500 characters", BAD_INPUT)
        user = session.acting_user(p, as_user)
        result = session.run(lift(p, env, user, comment))
        emit({"workflow_id": freeze_workflow_id(env), "result": result}, as_json,
             f"{freeze_workflow_id(env)}: {result}")
        return OK

