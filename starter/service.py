"""`kepler service create|show|list`, and the record of past operations that `service
show` and `kepler history` read (Temporal visibility)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table
from temporalio.client import Client

from kepler import search_attributes as sa
from kepler import yamlio
from kepler.models import CreateServiceRequest
from kepler.spec import ServiceSpec
from kepler.settings import Platform
from starter import session
from starter.cli_common import (
    BAD_INPUT, FAILED, OK, AsOpt, CliError, command, emit, subject_app, new_table,
)


def register(app: typer.Typer) -> None:
    service_app = subject_app("Create, show and list services.", no_args_is_help=True)
    app.add_typer(service_app, name="service")

    @command(service_app, "create")
    def service_create(file: Path = typer.Option(..., "-f", "--file", help="service spec YAML"),
                       reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
                       adopt: bool = typer.Option(False, "--adopt", help=(
                           "take over objects Kepler did not create in the service's "
                           "namespaces (platform admins only; without it they refuse, exit 3)")),
                       as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Create a service: GitLab project, Jenkins job, objects and routes in every env."""
        p = session.platform()
        spec = session.build(ServiceSpec, **read_spec(file))
        for env in spec.environments:
            session.check_env(p, env)
        req = session.build(CreateServiceRequest, spec=spec, reason=reason, adopt=adopt,
                            requested_by=session.acting_user(p, as_user))
        return session.run(session.launch(p, req, watch_it, as_json))

    @command(service_app, "show")
    def service_show(service: str, as_json: bool) -> int:
        """Show the last operation on SERVICE in each environment."""
        p = session.platform()
        rows = session.run(service_history(p, service, None))
        latest: dict[str, dict[str, str]] = {}
        for row in rows:
            latest.setdefault(row["env"], row)
        emit(latest, as_json, None if as_json else history_table(list(latest.values())))
        return OK if latest else FAILED

    @command(service_app, "list")
    def service_list(as_json: bool) -> int:
        """List the services Kepler created and has not decommissioned."""
        p = session.platform()
        rows = session.run(operations(
            p, f"{sa.OPERATION.name} IN ('create', 'decommission') AND {sa.OUTCOME.name} = 'succeeded'"))
        latest: dict[str, str] = {}
        for row in rows:  # newest first: a create after a decommission lists it again
            latest.setdefault(row["service"], row["operation"])
        services = sorted(s for s, operation in latest.items() if operation == "create")
        emit(services, as_json, "\n".join(services) or "no services yet")
        return OK


def read_spec(file: Path) -> dict[str, Any]:
    try:
        data = yamlio.load(file.read_text())
    except OSError as e:
        raise CliError(f"{file}: cannot read: {e.strerror}", BAD_INPUT) from None
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise CliError(f"{file}:{line}: {e.problem}", BAD_INPUT) from None
    if not isinstance(data, dict):
        raise CliError(f"{file}: must be a mapping (a service spec)", BAD_INPUT)
    return data


def history_table(rows: list[dict[str, str]]) -> Table:
    table = new_table(show_header=True)
    for col in ("started", "operation", "env", "version", "by", "status", "outcome"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["started"][:19], r["operation"], r["env"], r["version"], r["requested_by"],
                      r["status"], r["outcome"])
    return table


async def service_history(p: Platform, service: str, env: str | None) -> list[dict[str, str]]:
    """Operations on SERVICE (in ENV), newest first."""
    session.check_service(service)  # validated: it goes into a visibility query
    query = f"{sa.SERVICE.name} = '{service}'"
    if env:
        query += f" AND {sa.ENV.name} = '{env}'"
    return await operations(p, query)


async def operations(p: Platform, query: str) -> list[dict[str, str]]:
    """The operations a visibility query finds, newest first, as their search attributes say."""
    return await operations_of(await session.client(p), query)


async def operations_of(client: Client, query: str, limit: int = 200) -> list[dict[str, str]]:
    """The same, with a connected client (the console's)."""
    rows = []
    async for wf in client.list_workflows(query, limit=limit):
        attrs = wf.typed_search_attributes
        rows.append({
            "workflow_id": wf.id, "run_id": wf.run_id, "service": attrs.get(sa.SERVICE) or "",
            "env": attrs.get(sa.ENV) or "", "operation": attrs.get(sa.OPERATION) or wf.workflow_type,
            "version": attrs.get(sa.VERSION) or "", "requested_by": attrs.get(sa.REQUESTED_BY) or "",
            "started": wf.start_time.isoformat(), "status": wf.status.name.lower() if wf.status else "",
            "outcome": attrs.get(sa.OUTCOME) or "", "stage": attrs.get(sa.STAGE) or "",
        })
    return sorted(rows, key=lambda r: r["started"], reverse=True)
