"""`kepler scale` and `kepler resources`: a service's replicas and CPU/memory in one
environment, within the environment's bounds (both ways), signed, and approved where the
environment's policy requires approval."""

from __future__ import annotations

from typing import Optional

import typer

from kepler.scale import ResourcesRequest, ScaleRequest, quantity_value
from kepler.settings import Platform
from starter import session
from starter.cli_common import BAD_INPUT, AsOpt, CliError, EnvOpt, WatchOpt, command


def register(app: typer.Typer) -> None:
    @command(app)
    def scale(service: str, env: str = EnvOpt,
              replicas: Optional[int] = typer.Option(None, "--replicas", help="pods to run"),
              reset: bool = typer.Option(False, "--reset", help="back to the service spec's count"),
              reason: str = "", watch_it: bool = WatchOpt, as_user: Optional[str] = AsOpt,
              *, as_json: bool) -> int:
        """Set SERVICE's replicas in ENV; the next releases keep it until --reset. Where ENV
        requires approval, it waits for one of its approvers (kepler approve)."""
        p = session.platform()
        session.check_env(p, env)
        if (replicas is None) != reset:
            raise CliError("--replicas: give a number of replicas, or --reset (not both)",
                           BAD_INPUT)
        req = session.build(ScaleRequest, service=service, env=env, replicas=replicas,
                            reset=reset, reason=reason,
                            requested_by=session.acting_user(p, as_user))
        check_bounds(p, env, replicas=req.replicas)
        return session.run(session.launch(p, req, watch_it, as_json))

    @command(app)
    def resources(service: str, env: str = EnvOpt,
                  cpu: Optional[str] = typer.Option(None, "--cpu", help="CPU request, e.g. 500m"),
                  memory: Optional[str] = typer.Option(None, "--memory", help="memory request, e.g. 512Mi"),
                  cpu_limit: Optional[str] = typer.Option(None, "--cpu-limit"),
                  memory_limit: Optional[str] = typer.Option(None, "--memory-limit"),
                  reset: bool = typer.Option(False, "--reset", help="back to the service spec's"),
                  reason: str = "", watch_it: bool = WatchOpt, as_user: Optional[str] = AsOpt,
                  *, as_json: bool) -> int:
        """Set SERVICE's CPU/memory in ENV; the next releases keep it until --reset. Where ENV
        requires approval, it waits for one of its approvers (kepler approve)."""
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
        return session.run(session.launch(p, req, watch_it, as_json))


def check_bounds(p: Platform, env: str, replicas: int | None = None,
                 quantities: dict[str, str | None] | None = None) -> None:
    """Refuse, before anything starts, what goes over or under the environment's bounds
    (exit 2); the workflow and the activity that writes check again."""
    bounds = p.environment(env).bounds
    where = "in kepler.yaml)"
    if replicas is not None and replicas > bounds.max_replicas:
        raise CliError(f"--replicas: {replicas} is over {env}'s maximum of {bounds.max_replicas} "
                       f"(environments.{env}.bounds.max_replicas {where}", BAD_INPUT)
    if replicas is not None and replicas < bounds.min_replicas:
        raise CliError(f"--replicas: {replicas} is under {env}'s minimum of {bounds.min_replicas} "
                       f"(environments.{env}.bounds.min_replicas {where}", BAD_INPUT)
    for option, value in (quantities or {}).items():
        if not value:
            continue
        kind = "cpu" if "cpu" in option else "memory"
        most, least = getattr(bounds, f"max_{kind}"), getattr(bounds, f"min_{kind}")
        if quantity_value(value) > quantity_value(most):
            raise CliError(f"{option}: {value} is over {env}'s maximum of {most} "
                           f"(environments.{env}.bounds.max_{kind} {where}", BAD_INPUT)
        if quantity_value(value) < quantity_value(least):
            raise CliError(f"{option}: {value} is under {env}'s minimum of {least} "
                           f"(environments.{env}.bounds.min_{kind} {where}", BAD_INPUT)
