"""`kepler release`, `rollback`, `approve`, `reject`, `status`, `history` and `cancel`:
one operation on a service in one environment, its approval and its record."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import typer
from temporalio.service import RPCError

from kepler import naming

from kepler.clients import operations as operations_client
from kepler.clients.kube import Clusters
from kepler.models import ApprovalDecision, OperationStatus, ReleaseRequest, RollbackRequest
from kepler.settings import Platform
from starter import session, signing
from starter.cli_common import (
    BAD_INPUT, FAILED, OK, REFUSED, AfterFreezeOpt, AsOpt, BreakGlassOpt, CliError, EnvOpt,
    command, console, emit,
)
from kepler.canary import CanaryControl
from starter.canary import control_signer
from starter.promotion import show_path, workload_in
from starter.service import history_table, service_history
from starter.watch import render


READ_TIMEOUT_S = 10  # the CLI's read of a source environment's Deployment, per request


def register(app: typer.Typer) -> None:
    @command(app)
    def release(service: str, env: str = EnvOpt,
                ref: Optional[str] = typer.Option(None, "--ref", help="the git ref to release"),
                from_env: Optional[str] = typer.Option(None, "--from", help=(
                    "promote: release exactly the digest and commit live and healthy in this "
                    "environment (refused, exit 3, if it is not, or is younger than the soak)")),
                strategy: Optional[str] = typer.Option(None, "--strategy", help=(
                    "rolling | blue-green (default: as the service's spec says for ENV)")),
                reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                after_freeze: bool = AfterFreezeOpt, break_glass: bool = BreakGlassOpt,
                as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Release git REF of SERVICE to ENV, or promote what runs in another environment."""
        p = session.platform()
        session.check_env(p, env)
        if from_env is not None:
            session.check_env(p, from_env, "--from")
        req = session.build(ReleaseRequest, service=service, env=env, ref=ref,
                            from_env=from_env, strategy=strategy, reason=reason,
                            after_freeze=after_freeze,
                            break_glass=break_glass, requested_by=session.acting_user(p, as_user))
        refuse_unready_promotion(p, req)
        refuse_off_path(p, req)
        return session.run(session.launch(p, req, watch_it, as_json))

    @command(app)
    def rollback(service: str, env: str = EnvOpt,
                 to: str = typer.Option("previous", "--to", help="previous | VERSION | sha256:DIGEST"),
                 reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                 as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Roll SERVICE back in ENV to the previous release, a version or a digest. While a
        blue-green release (or a canary) runs, switch its traffic back to the previous
        version at once, still warm: one route write."""
        if to == "previous":
            p = session.platform()
            session.check_env(p, env)
            switched = session.run(switch_back(p, service, env, as_user, reason, watch_it, as_json))
            if switched is not None:
                return switched
        return session.start_operation(as_json, env, as_user, watch_it, RollbackRequest,
                                       service=service, target=to, reason=reason)

    async def switch_back(p: Platform, service: str, env: str, as_user: str | None, reason: str,
                          watch_it: bool, as_json: bool) -> int | None:
        """The running blue-green's (or canary's) abort, signed for its run; None when
        neither runs."""
        temporal = await session.client(p)
        handle = temporal.get_workflow_handle(naming.workflow_id(service, env))
        if not await operations_client.canary_running(handle):
            return None
        control = session.build(CanaryControl, by=session.acting_user(p, as_user), reason=reason)
        result = await operations_client.control(temporal, service, env, "abort", control,
                                                 control_signer(p, control.by))
        if watch_it:
            if not as_json:
                console.print(f"{handle.id}: {result}")
            return await session.follow(p, handle, as_json)
        emit({"workflow_id": handle.id, "result": result}, as_json, f"{handle.id}: {result}")
        return OK

    def decider(verb: str) -> Callable[..., int]:
        def decide(service: str, env: str = EnvOpt, comment: str = "",
                   as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
            p = session.platform()
            session.check_target(p, service, env)  # env "all": service-wide (decommission)
            decision = session.build(ApprovalDecision, approver=session.acting_user(p, as_user),
                                     comment=comment)

            async def go() -> str:  # signed for the run and digests pending now
                try:
                    return await signing.decide(await session.client(p), p, service, env, verb,
                                                decision.approver, decision.comment)
                except signing.SigningError as e:
                    raise CliError(str(e), BAD_INPUT) from None

            result = session.run(go())
            emit({"workflow_id": naming.workflow_id(service, env), "result": result}, as_json,
                 f"{naming.workflow_id(service, env)}: {result}")
            return OK
        decide.__doc__ = f"{verb.capitalize()} the pending approval of SERVICE in ENV."
        return decide

    for verb in ("approve", "reject"):
        command(app, verb)(decider(verb))

    @command(app)
    def status(service: str, env: Optional[str] = typer.Option(None, "--env", "-e", help=(
                   "the environment; without it, every environment on the promotion path")),
               *, as_json: bool) -> int:
        """Show the running or last operation on SERVICE in ENV; without --env, where its
        release stands in each environment of its promotion path."""
        p = session.platform()
        if env is None:
            session.check_service(service)
            show_path(p, service, as_json)
            return OK
        session.check_target(p, service, env)
        workflow_id = naming.workflow_id(service, env)

        async def go() -> OperationStatus:
            try:
                return await operations_client.status(await session.client(p), workflow_id)
            except RPCError as e:
                raise CliError(f"{workflow_id}: no operation found ({e.message})", FAILED) from None

        state = session.run(go())
        if as_json:
            emit({"workflow_id": workflow_id, "ui": session.ui_link(p, workflow_id),
                  **state.model_dump(mode="json")}, True)
        else:
            console.print(render(state))
            console.print(session.ui_link(p, workflow_id))
        return OK if state.outcome in ("succeeded", "running", "soaking", "restored") else FAILED

    @command(app)
    def history(service: str, env: Optional[str] = typer.Option(None, "--env", "-e"),
                *, as_json: bool) -> int:
        """List past operations on SERVICE, newest first."""
        p = session.platform()
        if env:
            session.check_env(p, env)
        rows = session.run(service_history(p, service, env))
        emit(rows, as_json, None if as_json else history_table(rows))
        return OK

    @command(app)
    def cancel(service: str, env: str = EnvOpt, *, as_json: bool) -> int:
        """Cancel the running operation on SERVICE in ENV (it undoes what it did first)."""
        p = session.platform()
        session.check_target(p, service, env)
        workflow_id = naming.workflow_id(service, env)

        async def go() -> None:
            await operations_client.cancel(await session.client(p), workflow_id)

        session.run(go())
        emit({"workflow_id": workflow_id, "cancel_requested": True}, as_json,
             f"{workflow_id}: cancellation requested; it undoes its changes, then ends cancelled")
        return OK


def refuse_unready_promotion(p: Platform, req: ReleaseRequest) -> None:
    """The fast answer to `--from SOURCE`, before anything starts (README: Promotion): exit 2
    when ENV's promotion path names another source; exit 3 when SOURCE runs nothing Kepler
    recorded live, fully rolled out and available, or has run it for less than the path's
    soak (from the release history on its Deployment). The workflow checks all of it again
    (and its Prometheus verification, which only it makes); what the CLI cannot read, it
    leaves to the workflow."""
    source = req.from_env
    if source is None:
        return
    path = p.promotion.get(req.env)
    if path is not None and path.source != source:
        raise CliError(f"--from: {req.env} is promoted from {path.source} "
                       f"(promotion.{req.env}.from), not from {source}", BAD_INPUT)
    workload = workload_in(p, Clusters(p), req.service, source, timeout=READ_TIMEOUT_S)
    if workload.error:
        return
    live, soak = workload.live, path.soak if path is not None else timedelta(0)
    if not live.healthy:
        raise CliError(f"nothing to promote from {source}: {live.detail}", REFUSED)
    if live.since is None or datetime.now(timezone.utc) - live.since < soak:
        since = f"{live.since:%Y-%m-%d %H:%M:%S} UTC" if live.since else "an unknown time"
        raise CliError(f"{live.version} ({live.commit[:12]}) has been live in {source} since "
                       f"{since}, less than {req.env}'s soak of {soak}", REFUSED)


def refuse_off_path(p: Platform, req: ReleaseRequest) -> None:
    """The fast answer (exit 3, before anything starts) to a release by ref into an
    environment with a promotion path of something its source does not run, live and
    healthy for the soak: the ref must name the source's live version or commit. The
    workflow checks again itself (the ref resolved), and so does the apply; what the CLI
    cannot read, it leaves to the workflow."""
    path = p.promotion.get(req.env)
    if path is None or req.ref is None or req.break_glass:
        return
    workload = workload_in(p, Clusters(p), req.service, path.source, timeout=READ_TIMEOUT_S)
    if workload.error:
        return
    live = workload.live
    why = None
    if not live.healthy:
        why = f"nothing live and healthy there ({live.detail})"
    elif req.ref != live.version and not live.commit.startswith(req.ref):
        why = f"it runs {live.version} ({live.commit[:12]}), not {req.ref}"
    elif live.since is None or datetime.now(timezone.utc) - live.since < path.soak:
        why = f"{live.version} has been live there for less than the soak of {path.soak}"
    if why is not None:
        raise CliError(f"{req.env} takes only what {path.source} runs, live and healthy for "
                       f"{path.soak} (promotion.{req.env}.from): {why}. Promote it with "
                       f"--from {path.source}; --break-glass --reason TEXT asks two approvers "
                       "to let this through", REFUSED)
