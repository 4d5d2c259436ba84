"""`kepler service create|show|list`, `release`, `rollback`, `approve`, `reject`,
`status`, `history`, `cancel` (DESIGN §5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from kepler import naming, yamlio
from kepler import search_attributes as sa
from kepler.models import (
    ApprovalDecision, CreateServiceRequest, OperationStatus, ReleaseRequest, RollbackRequest,
    ServiceSpec,
)
from kepler.settings import Platform
from kepler.validation import service_name
from starter import ops, session
from starter.output import BAD_INPUT, FAILED, OK, REFUSED, CliError, console, emit, fail
from starter.watch import render, watch

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
EnvOpt = typer.Option(..., "--env", "-e", help="target environment (from kepler.yaml)")
AsOpt = typer.Option(None, "--as", help="act as USER (where the identity mode allows)")


def _json(output: str) -> bool:
    if output not in ("text", "json"):
        raise CliError("--output: must be text or json", BAD_INPUT)
    return output == "json"


def guarded(output: str, body: Any) -> None:
    """Run a command body; CliError becomes its message and exit code."""
    try:
        code = body()
    except CliError as e:
        fail(e, output == "json")
    raise typer.Exit(code or OK)


async def launch(p: Platform, req: Any, watch_it: bool, as_json: bool) -> int:
    client = await session.client(p)
    started = await ops.start(client, req, p.temporal.task_queue)
    link = session.ui_link(p, started.workflow_id, started.run_id)
    if not watch_it:
        emit({"workflow_id": started.workflow_id, "run_id": started.run_id, "ui": link}, as_json,
             f"started [bold]{started.workflow_id}[/bold] ({ops.summary(req)})\n{link}")
        return OK
    last = await watch(started.handle) if not as_json else None
    try:
        report = await started.handle.result()
    except Exception as e:  # noqa: BLE001 - the failure is the operation's outcome
        status = last or await _status_or_none(client, started.workflow_id)
        message = status.error if status and status.error else str(e)
        raise CliError(message, FAILED, {"workflow_id": started.workflow_id, "ui": link,
                                         "outcome": status.outcome if status else "failed"}) from None
    emit({"workflow_id": started.workflow_id, "ui": link, "report": report}, as_json,
         f"[green]{report.outcome}[/green]  {link}")
    return OK


async def _status_or_none(client: Client, workflow_id: str) -> OperationStatus | None:
    try:
        return await ops.status(client, workflow_id)
    except RPCError:
        return None


def register(app: typer.Typer) -> None:
    service_app = typer.Typer(help="Create, show and list services.", no_args_is_help=True)
    app.add_typer(service_app, name="service")

    @service_app.command("create")
    def service_create(file: Path = typer.Option(..., "-f", "--file", help="service spec YAML"),
                       reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                       as_user: Optional[str] = AsOpt, output: str = OutputOpt) -> None:
        """Create a service: GitLab project, Jenkins job, objects and routes in every env."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            try:
                data = yamlio.load(file.read_text())
            except OSError as e:
                raise CliError(f"{file}: cannot read: {e.strerror}", BAD_INPUT) from None
            except yaml.MarkedYAMLError as e:
                line = e.problem_mark.line + 1 if e.problem_mark else 0
                raise CliError(f"{file}:{line}: {e.problem}", BAD_INPUT) from None
            if not isinstance(data, dict):
                raise CliError(f"{file}: must be a mapping (a service spec)", BAD_INPUT)
            spec = session.build(ServiceSpec, **data)
            for env in spec.environments:
                session.check_env(p, env)
            req = session.build(CreateServiceRequest, spec=spec, reason=reason,
                                requested_by=session.acting_user(p, as_user))
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)

    @service_app.command("show")
    def service_show(service: str, output: str = OutputOpt) -> None:
        """Show the last operation on SERVICE in each environment."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            rows = session.run(_history(p, service, None))
            latest: dict[str, dict] = {}
            for row in rows:
                latest.setdefault(row["env"], row)
            emit(latest, as_json, None if as_json else _table(list(latest.values())))
            return OK if latest else FAILED
        guarded(output, body)

    @service_app.command("list")
    def service_list(output: str = OutputOpt) -> None:
        """List the services Kepler created."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            rows = session.run(_query(p, f"{sa.OPERATION.name} = 'create'"))
            services = sorted({r["service"] for r in rows if r["outcome"] == "succeeded"})
            emit(services, as_json, "\n".join(services) or "no services yet")
            return OK
        guarded(output, body)

    @app.command()
    def release(service: str, env: str = EnvOpt, ref: str = typer.Option(..., "--ref"),
                reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                as_user: Optional[str] = AsOpt, output: str = OutputOpt) -> None:
        """Release git REF of SERVICE to ENV."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_env(p, env)
            req = session.build(ReleaseRequest, service=service, env=env, ref=ref, reason=reason,
                                requested_by=session.acting_user(p, as_user))
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)

    @app.command()
    def rollback(service: str, env: str = EnvOpt,
                 to: str = typer.Option("previous", "--to", help="previous | VERSION | sha256:DIGEST"),
                 reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                 as_user: Optional[str] = AsOpt, output: str = OutputOpt) -> None:
        """Roll SERVICE back in ENV to the previous release, a version or a digest."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_env(p, env)
            req = session.build(RollbackRequest, service=service, env=env, target=to, reason=reason,
                                requested_by=session.acting_user(p, as_user))
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)

    for verb in ("approve", "reject"):
        def decide(service: str, env: str = EnvOpt, comment: str = "",
                   as_user: Optional[str] = AsOpt, output: str = OutputOpt, _verb: str = verb) -> None:
            def body() -> int:
                as_json = _json(output)
                p = session.platform()
                session.check_target(p, service, env)  # env "all": service-wide (decommission)
                decision = session.build(ApprovalDecision, approver=session.acting_user(p, as_user),
                                         comment=comment)

                async def go() -> str:
                    return await ops.decide(await session.client(p), service, env, _verb, decision)

                result = session.run(go())
                emit({"workflow_id": naming.workflow_id(service, env), "result": result}, as_json,
                     f"{naming.workflow_id(service, env)}: {result}")
                return OK
            guarded(output, body)
        decide.__doc__ = f"{verb.capitalize()} the pending approval of SERVICE in ENV."
        app.command(verb)(decide)

    @app.command()
    def status(service: str, env: str = EnvOpt, output: str = OutputOpt) -> None:
        """Show the running or last operation on SERVICE in ENV."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_target(p, service, env)
            workflow_id = naming.workflow_id(service, env)

            async def go() -> OperationStatus:
                try:
                    return await ops.status(await session.client(p), workflow_id)
                except RPCError as e:
                    raise CliError(f"{workflow_id}: no operation found ({e.message})", FAILED) from None

            state = session.run(go())
            if as_json:
                emit({"workflow_id": workflow_id, "ui": session.ui_link(p, workflow_id), **state.model_dump(mode="json")}, True)
            else:
                console.print(render(state))
                console.print(session.ui_link(p, workflow_id))
            return OK if state.outcome in ("succeeded", "running", "soaking", "restored") else FAILED
        guarded(output, body)

    @app.command()
    def history(service: str, env: Optional[str] = typer.Option(None, "--env", "-e"),
                output: str = OutputOpt) -> None:
        """List past operations on SERVICE, newest first."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            if env:
                session.check_env(p, env)
            rows = session.run(_history(p, service, env))
            emit(rows, as_json, None if as_json else _table(rows))
            return OK
        guarded(output, body)

    @app.command()
    def cancel(service: str, env: str = EnvOpt, output: str = OutputOpt) -> None:
        """Cancel the running operation on SERVICE in ENV (it undoes what it did first)."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_target(p, service, env)
            workflow_id = naming.workflow_id(service, env)

            async def go() -> None:
                client = await session.client(p)
                handle = client.get_workflow_handle(workflow_id)
                try:
                    desc = await handle.describe()
                except RPCError:
                    raise CliError(f"{workflow_id}: nothing is running", REFUSED) from None
                if desc.status != WorkflowExecutionStatus.RUNNING:
                    raise CliError(f"{workflow_id}: nothing is running", REFUSED)
                await handle.cancel()

            session.run(go())
            emit({"workflow_id": workflow_id, "cancel_requested": True}, as_json,
                 f"{workflow_id}: cancellation requested; it undoes its changes, then ends cancelled")
            return OK
        guarded(output, body)


def _table(rows: list[dict]) -> Table:
    table = Table(show_header=True, header_style="bold")
    for col in ("started", "operation", "env", "version", "by", "status", "outcome"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["started"][:19], r["operation"], r["env"], r["version"], r["requested_by"],
                      r["status"], r["outcome"])
    return table


async def _history(p: Platform, service: str, env: str | None) -> list[dict]:
    try:
        service_name(service)  # validated: it goes into a visibility query
    except ValueError as e:
        raise CliError(f"service: {e}", BAD_INPUT) from None
    query = f"{sa.SERVICE.name} = '{service}'"
    if env:
        query += f" AND {sa.ENV.name} = '{env}'"
    return await _query(p, query)


async def _query(p: Platform, query: str) -> list[dict]:
    client = await session.client(p)
    rows = []
    async for wf in client.list_workflows(query, limit=200):
        attrs = wf.typed_search_attributes
        rows.append({
            "workflow_id": wf.id, "run_id": wf.run_id, "service": attrs.get(sa.SERVICE) or "",
            "env": attrs.get(sa.ENV) or "", "operation": attrs.get(sa.OPERATION) or wf.workflow_type,
            "version": attrs.get(sa.VERSION) or "", "requested_by": attrs.get(sa.REQUESTED_BY) or "",
            "started": wf.start_time.isoformat(), "status": wf.status.name.lower() if wf.status else "",
            "outcome": attrs.get(sa.OUTCOME) or "", "stage": attrs.get(sa.STAGE) or "",
        })
    return sorted(rows, key=lambda r: r["started"], reverse=True)
