"""`kepler train`, `kepler scale` and `kepler resources` (issue 11)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from kepler.scale import ResourcesRequest, ScaleRequest, quantity_value
from kepler.settings import Platform
from kepler.train import TrainReport, TrainRequest
from kepler.validation import describe_validation_error
from starter import ops, session
from starter.commands_ops import _json, guarded, launch
from starter.output import BAD_INPUT, FAILED, OK, CliError, console, emit
from starter.watch import watch

OutputOpt = typer.Option("text", "--output", "-o", help="text or json")
EnvOpt = typer.Option(..., "--env", "-e", help="target environment (from kepler.yaml)")
AsOpt = typer.Option(None, "--as", help="act as USER (where the identity mode allows)")
WatchOpt = typer.Option(False, "--watch", help="follow the operation until it ends")


def read_train(file: Path, env: str | None, requested_by: str, reason: str) -> TrainRequest:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"{file}: {e}", BAD_INPUT) from None
    if not isinstance(data, dict):
        raise CliError(f"{file}: must be a mapping with name, env and members", BAD_INPUT)
    data = {**data, "requested_by": requested_by}
    if env:
        data["env"] = env
    if reason:
        data["reason"] = reason
    try:
        return TrainRequest.model_validate(data)
    except ValidationError as e:
        raise CliError(f"{file}: " + describe_validation_error(e).removeprefix("input: "),
                       BAD_INPUT) from None


def member_table(report: TrainReport) -> Table:
    table = Table(title=f"train {report.name} to {report.env}: {report.outcome}",
                  header_style="bold")
    for col in ("wave", "service", "ref", "outcome", "image", "detail"):
        table.add_column(col, overflow="fold")
    for m in report.members:
        table.add_row(str(m.wave), m.service, m.ref, m.outcome, m.image.rsplit("@", 1)[-1][:19],
                      m.error or m.rollback)
    return table


async def run_train(p: Platform, req: TrainRequest, watch_it: bool, as_json: bool) -> int:
    client = await session.client(p)
    started = await ops.start(client, req, p.temporal.task_queue)
    link = session.ui_link(p, started.workflow_id, started.run_id)
    if not watch_it:
        emit({"workflow_id": started.workflow_id, "run_id": started.run_id, "ui": link}, as_json,
             f"started [bold]{started.workflow_id}[/bold] ({ops.summary(req)})\n{link}\n"
             f"approve with: kepler approve {req.service} --env {req.env}")
        return OK
    last = await watch(started.handle) if not as_json else None
    try:
        await started.handle.result()
        code = OK
    except Exception:  # noqa: BLE001 - the outcome is in the report
        code = FAILED
    report = await started.handle.query("report", result_type=TrainReport)
    data = {"workflow_id": started.workflow_id, "ui": link, "report": report}
    if as_json:
        emit(data, True)
    else:
        console.print(member_table(report))
        if last and last.error:
            console.print(f"[red]{last.error}[/red]")
        console.print(link)
    return code


def check_bounds(p: Platform, env: str, replicas: int | None = None,
                 quantities: dict[str, str | None] | None = None) -> None:
    """Refuse, before anything starts, what goes over the environment's bounds (exit 2)."""
    bounds = p.environment(env).bounds
    if replicas is not None and replicas > bounds.max_replicas:
        raise CliError(f"--replicas: {replicas} is over {env}'s maximum of {bounds.max_replicas} "
                       f"(environments.{env}.bounds.max_replicas in kepler.yaml)", BAD_INPUT)
    for option, value in (quantities or {}).items():
        if not value:
            continue
        limit = bounds.max_cpu if "cpu" in option else bounds.max_memory
        kind = "max_cpu" if "cpu" in option else "max_memory"
        if quantity_value(value) > quantity_value(limit):
            raise CliError(f"{option}: {value} is over {env}'s maximum of {limit} "
                           f"(environments.{env}.bounds.{kind} in kepler.yaml)", BAD_INPUT)


def register(app: typer.Typer) -> None:
    @app.command()
    def train(file: Path = typer.Option(..., "-f", "--file", help="train YAML: name, env, members"),
              env: Optional[str] = typer.Option(None, "--env", "-e", help="overrides the file's env"),
              reason: str = "", watch_it: bool = WatchOpt, as_user: Optional[str] = AsOpt,
              output: str = OutputOpt) -> None:
        """Release several services as one train: dependency order, one approval, all or nothing."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            req = read_train(file, env, session.acting_user(p, as_user), reason)
            session.check_env(p, req.env)
            return session.run(run_train(p, req, watch_it, as_json))
        guarded(output, body)

    @app.command()
    def scale(service: str, env: str = EnvOpt,
              replicas: Optional[int] = typer.Option(None, "--replicas", help="pods to run"),
              reset: bool = typer.Option(False, "--reset", help="back to the service spec's count"),
              reason: str = "", watch_it: bool = WatchOpt, as_user: Optional[str] = AsOpt,
              output: str = OutputOpt) -> None:
        """Set SERVICE's replicas in ENV; the next releases keep it until --reset."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_env(p, env)
            if (replicas is None) != reset:
                raise CliError("--replicas: give a number of replicas, or --reset (not both)",
                               BAD_INPUT)
            req = session.build(ScaleRequest, service=service, env=env, replicas=replicas,
                                reset=reset, reason=reason,
                                requested_by=session.acting_user(p, as_user))
            check_bounds(p, env, replicas=req.replicas)
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)

    @app.command()
    def resources(service: str, env: str = EnvOpt,
                  cpu: Optional[str] = typer.Option(None, "--cpu", help="CPU request, e.g. 500m"),
                  memory: Optional[str] = typer.Option(None, "--memory", help="memory request, e.g. 512Mi"),
                  cpu_limit: Optional[str] = typer.Option(None, "--cpu-limit"),
                  memory_limit: Optional[str] = typer.Option(None, "--memory-limit"),
                  reset: bool = typer.Option(False, "--reset", help="back to the service spec's"),
                  reason: str = "", watch_it: bool = WatchOpt, as_user: Optional[str] = AsOpt,
                  output: str = OutputOpt) -> None:
        """Set SERVICE's CPU/memory in ENV; the next releases keep it until --reset."""
        def body() -> int:
            as_json = _json(output)
            p = session.platform()
            session.check_env(p, env)
            if reset == any((cpu, memory, cpu_limit, memory_limit)):
                raise CliError("--cpu: give --cpu and/or --memory (or their limits), or --reset "
                               "(not both)", BAD_INPUT)
            req = session.build(ResourcesRequest, service=service, env=env, cpu=cpu, memory=memory,
                                cpu_limit=cpu_limit, memory_limit=memory_limit, reset=reset,
                                reason=reason, requested_by=session.acting_user(p, as_user))
            check_bounds(p, env, quantities={"--cpu": req.cpu, "--memory": req.memory,
                                             "--cpu-limit": req.cpu_limit,
                                             "--memory-limit": req.memory_limit})
            for kind in ("cpu", "memory"):
                request, limit = getattr(req, kind), getattr(req, f"{kind}_limit")
                if request and limit and quantity_value(request) > quantity_value(limit):
                    raise CliError(f"--{kind}: the request {request} is over --{kind}-limit {limit}",
                                   BAD_INPUT)
            return session.run(launch(p, req, watch_it, as_json))
        guarded(output, body)
