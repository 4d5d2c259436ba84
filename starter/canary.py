"""`kepler canary` and `kepler pause|resume|promote|abort`: a progressive release of one
service in one environment, and steering it while it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer

from kepler import naming

from kepler.clients import operations as operations_client
from kepler.canary import CanaryControl
from kepler.identity import PERSON, SignedStatement, Statement
from kepler.models import CanaryRequest, MetricCheck
from kepler.settings import Platform
from starter import session, signing
from starter.cli_common import (
    BAD_INPUT, OK, AfterFreezeOpt, AsOpt, BreakGlassOpt, CliError, EnvOpt, command, emit,
)

METRIC_HELP = ("a check NAME:MIN:MAX[:PROMQL] (MIN or MAX may be empty); without PROMQL, NAME "
               "is a built-in (request-success-rate, request-duration) and this sets its "
               "thresholds. PromQL may use $namespace, $workload, $service and $interval. "
               "Repeatable.")


def parse_steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--steps: must be comma-separated weights such as 10,20,50 (got {text!r})",
                       BAD_INPUT) from None


def parse_metric(text: str) -> dict[str, Any]:
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise CliError(f"--metric: must be NAME:MIN:MAX[:PROMQL] (got {text!r})", BAD_INPUT)
    name, low, high = parts[:3]
    check: dict[str, Any] = {"name": name, "query": parts[3] if len(parts) == 4 else None}
    for key, value in (("min", low), ("max", high)):
        if value.strip():
            try:
                check[key] = float(value)
            except ValueError:
                raise CliError(f"--metric {name}: {key} must be a number (got {value!r})",
                               BAD_INPUT) from None
    return check


def control_signer(p: Platform, who: str, key: Path | None = None, namespace: str = PERSON,
                   on_behalf_of: str = "") -> operations_client.Sign:
    """How the CLI (and chat-ops, as a delegate naming `who`) signs a control for `who`;
    a key that cannot sign is bad input (exit 2)."""
    async def sign(statement: Statement) -> SignedStatement:
        if on_behalf_of:
            statement = statement.model_copy(update={"on_behalf_of": on_behalf_of})
        try:
            return await asyncio.to_thread(signing.sign, statement,
                                           key or signing.signing_key(p, who), namespace)
        except signing.SigningError as e:
            raise CliError(str(e), BAD_INPUT) from None
    return sign


def register(app: typer.Typer) -> None:
    @command(app)
    def canary(service: str, env: str = EnvOpt, ref: str = typer.Option(..., "--ref"),
               steps: Optional[str] = typer.Option(
                   None, "--steps", help="weights in percent, e.g. 10,20,50"),
               step_weight: int = typer.Option(10, "--step-weight", help="without --steps"),
               max_weight: int = typer.Option(50, "--max-weight", help="without --steps"),
               interval: str = typer.Option("1m", "--interval", help="analysis interval (>= 10s)"),
               failure_limit: int = typer.Option(5, "--failure-limit",
                                                 help="failed checks before rolling back"),
               no_data: str = typer.Option("fail", "--no-data", help="fail | skip | halt"),
               success_rate: Optional[float] = typer.Option(
                   None, "--success-rate", help="minimum request success rate in % (99)"),
               max_p99: Optional[float] = typer.Option(
                   None, "--max-p99", help="maximum p99 request duration in ms (500)"),
               metric: list[str] = typer.Option([], "--metric", help=METRIC_HELP),
               approve_promotion: bool = typer.Option(
                   False, "--approve-promotion", help="wait for an approval before promoting"),
               max_duration: str = typer.Option("7d", "--max-duration",
                                                help="deadline of the whole canary"),
               mirror: Optional[int] = typer.Option(
                   None, "--mirror", help="first copy this % (1-100) of the live traffic to the "
                   "canary, answers discarded, and analyse it under that load (--mirror-for)"),
               mirror_for: str = typer.Option("5m", "--mirror-for",
                                              help="how long the mirror stage lasts (10s-24h)"),
               reason: str = "", watch_it: bool = typer.Option(False, "--watch"),
               after_freeze: bool = AfterFreezeOpt, break_glass: bool = BreakGlassOpt,
               as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Run a canary of REF for SERVICE in ENV: shift traffic step by step while the
        analysis passes (after a mirror stage with --mirror), then promote; roll back at the
        failure limit."""
        p = session.platform()
        session.check_env(p, env)
        checks = [parse_metric(m) for m in metric]
        if success_rate is not None:
            checks.append({"name": "request-success-rate", "min": success_rate})
        if max_p99 is not None:
            checks.append({"name": "request-duration", "max": max_p99})
        req = session.build(
            CanaryRequest, service=service, env=env, ref=ref, reason=reason,
            requested_by=session.acting_user(p, as_user), steps=parse_steps(steps),
            step_weight=step_weight, max_weight=max_weight, interval=interval,
            failure_limit=failure_limit, no_data=no_data,
            metrics=[session.build(MetricCheck, **c) for c in checks],
            approve_promotion=approve_promotion, max_duration=max_duration,
            mirror=None if mirror is None else {"percent": mirror, "duration": mirror_for},
            after_freeze=after_freeze, break_glass=break_glass)
        return session.run(session.launch(p, req, watch_it, as_json))

    def make(verb: str, what: str) -> None:
        def control(service: str, env: str = EnvOpt, reason: str = "",
                    as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
            p = session.platform()
            session.check_env(p, env)
            req = session.build(CanaryControl, by=session.acting_user(p, as_user),
                                reason=reason)

            async def go() -> str:
                return await operations_client.control(await session.client(p), service, env,
                                                       verb, req, control_signer(p, req.by))

            result = session.run(go())
            workflow_id = naming.workflow_id(service, env)
            emit({"workflow_id": workflow_id, "result": result}, as_json,
                 f"{workflow_id}: {result}")
            return OK
        control.__doc__ = what
        command(app, verb)(control)

    for verb, what in (("pause", "Pause the running canary of SERVICE in ENV (analysis goes on)."),
                       ("resume", "Resume the paused canary of SERVICE in ENV."),
                       ("promote", "Promote the running canary of SERVICE in ENV now, skipping "
                                   "its remaining steps (not its approval); where approval is "
                                   "required, an approver other than the requester only."),
                       ("abort", "Abort the running canary of SERVICE in ENV: traffic back to "
                                 "stable, canary scaled to 0.")):
        make(verb, what)
