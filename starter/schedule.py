"""`kepler schedule release|list|delete|trigger`: scheduled releases as Temporal Schedules
(kepler/schedules.py). Each fire starts ScheduledRelease, which releases under the
`<service>@<env>` lock; overlap policy SKIP."""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer
from temporalio.client import (
    Client, Schedule, ScheduleAlreadyRunningError, ScheduleHandle, ScheduleOverlapPolicy,
    SchedulePolicy, ScheduleSpec, ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from kepler.clients import operations as operations_client
from kepler.models import ReleaseRequest
from kepler.schedules import ScheduledReleaseRequest, schedule_id
from kepler.settings import Platform
from starter import session, signing
from starter.cli_common import (
    BAD_INPUT, OK, REFUSED, AsOpt, CliError, EnvOpt, command, emit, subject_app, new_table,
)


def check_cron(cron: str) -> str:
    fields = cron.split()
    if not 5 <= len(fields) <= 7:
        raise CliError(f"--cron: {cron!r} must have 5 fields (minute hour day month weekday), "
                       "6 (with year) or 7 (with seconds first)", BAD_INPUT)
    return " ".join(fields)


async def create(p: Platform, req: ReleaseRequest, cron: str) -> str:
    try:  # each fire's release is requested by whoever signed this, for this schedule
        req = signing.sign_request(p, req, for_schedule=True)
    except signing.SigningError as e:
        raise CliError(str(e), BAD_INPUT) from None
    client = await session.client(p)
    sid = schedule_id(req.service, req.env)
    action = operations_client.schedule_action(ScheduledReleaseRequest(release=req, cron=cron),
                                               p.temporal.task_queue)
    try:
        await client.create_schedule(sid, Schedule(
            action=action, spec=ScheduleSpec(cron_expressions=[cron]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(note=f"created by {req.requested_by}"
                                + (f": {req.reason}" if req.reason else ""))),
            memo={"service": req.service, "env": req.env, "ref": req.ref, "cron": cron,
                  "requested_by": req.requested_by})
    except ScheduleAlreadyRunningError:
        raise CliError(f"{sid} already exists: kepler schedule delete {req.service} "
                       f"--env {req.env} first", REFUSED) from None
    except RPCError as e:
        if e.status == RPCStatusCode.INVALID_ARGUMENT:
            raise CliError(f"--cron: {e.message}", BAD_INPUT) from None
        raise
    return sid


async def listing(p: Platform) -> list[dict[str, Any]]:
    client = await session.client(p)
    rows = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith("release-"):
            continue
        memo = await entry.memo()
        info = entry.info
        rows.append({
            "id": entry.id, **{k: memo.get(k, "") for k in ("service", "env", "ref", "cron",
                                                               "requested_by")},
            "next": [t.isoformat() for t in (info.next_action_times if info else [])][:3],
            "recent": [{"at": a.action_at.isoformat(), "workflow_id": a.action.workflow_id}
                       for a in (info.recent_actions if info else [])][-3:],
        })
    return sorted(rows, key=lambda r: r["id"])


async def handle_of(client: Client, service: str, env: str) -> ScheduleHandle:
    sid = schedule_id(service, env)
    handle = client.get_schedule_handle(sid)
    try:
        await handle.describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"{sid}: no such schedule (kepler schedule list)", REFUSED) from None
        raise
    return handle


def register(app: typer.Typer) -> None:
    schedule_app = subject_app("Scheduled releases (Temporal Schedules).", no_args_is_help=True)
    app.add_typer(schedule_app, name="schedule")

    @command(schedule_app, "release")
    def schedule_release(service: str, env: str = EnvOpt, ref: str = typer.Option(..., "--ref"),
                         cron: str = typer.Option(..., "--cron", help="e.g. '0 2 * * *' (UTC)"),
                         reason: str = "", as_user: Optional[str] = AsOpt,
                         *, as_json: bool) -> int:
        """Release REF of SERVICE to ENV on a cron schedule (UTC); a fire is skipped while the
        previous one, or any other operation on SERVICE in ENV, still runs."""
        p = session.platform()
        session.check_env(p, env)
        spec = check_cron(cron)
        req = session.build(ReleaseRequest, service=service, env=env, ref=ref,
                            reason=reason or f"scheduled: {spec}",
                            requested_by=session.acting_user(p, as_user))
        sid = session.run(create(p, req, spec))
        emit({"schedule_id": sid, "cron": spec}, as_json,
             f"scheduled [bold]{sid}[/bold]: release {ref} of {service} to {env} at '{spec}' "
             "(UTC), overlaps skipped")
        return OK

    @command(schedule_app, "list")
    def schedule_list(as_json: bool) -> int:
        """List scheduled releases with their next fire times."""
        rows = session.run(listing(session.platform()))
        table = new_table()
        for col in ("schedule", "ref", "cron", "by", "next"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["id"], r["ref"], r["cron"], r["requested_by"],
                          (r["next"] or [""])[0][:19])
        emit(rows, as_json, None if as_json else (table if rows else "no scheduled releases"))
        return OK

    def action(verb: str) -> Callable[..., int]:
        def act(service: str, env: str = EnvOpt, *, as_json: bool) -> int:
            p = session.platform()
            session.check_env(p, env)
            session.check_service(service)

            async def go() -> None:
                handle = await handle_of(await session.client(p), service, env)
                await (handle.delete() if verb == "delete" else handle.trigger())

            session.run(go())
            sid = schedule_id(service, env)
            emit({"schedule_id": sid, verb + "d": True}, as_json,
                 f"{sid}: " + ("deleted" if verb == "delete" else "triggered (fires now)"))
            return OK
        act.__doc__ = ("Delete the release schedule of SERVICE in ENV." if verb == "delete" else
                       "Fire the release schedule of SERVICE in ENV now (overlap policy applies).")
        return act

    for verb in ("delete", "trigger"):
        command(schedule_app, verb)(action(verb))
