"""`kepler status SERVICE` without --env: where the service's artifact stands on its
promotion path — what is live in each environment and since when, the last operation
there, and any automatic promotion soaking or waiting (kepler/promotion.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from kepler import naming
from kepler.clients import operations as operations_client
from kepler.clients.kube import Clusters, read_deployment
from kepler.contracts import PROMOTION_REPORT
from kepler.promotion import LiveRelease, auto_workflow_id, live_release_of
from kepler.settings import Platform
from kepler.payloads import ReleaseRecord, history_of
from starter import session
from starter.cli_common import emit, new_table


def path_order(p: Platform) -> list[str]:
    """Every environment, sources before the environments promoted from them."""
    def depth(env: str) -> int:
        return 0 if env not in p.promotion else 1 + depth(p.promotion[env].source)
    return sorted(p.environments, key=lambda env: (depth(env), list(p.environments).index(env)))


@dataclass
class Workload:
    """The service's Deployment in one environment as read now: the object (None when there
    is none or it could not be read: `error` says why), what is live in it, and its release
    history."""
    deploy: dict[str, Any] | None
    live: LiveRelease
    history: list[ReleaseRecord] = field(default_factory=list)  # newest first
    error: str = ""


def workload_in(p: Platform, clusters: Clusters, service: str, env: str,
                timeout: float | None = None) -> Workload:
    """Blocking (the Kubernetes client): callers on an event loop use asyncio.to_thread."""
    namespace = p.environment(env).namespace_for(service, env)
    try:
        deploy = read_deployment(clusters(env).api, namespace, service, timeout)
    except Exception as e:  # noqa: BLE001 - an unreachable cluster is shown, not fatal
        why = f"cannot read {namespace}/{service}: {type(e).__name__}: {e}"[:300]
        return Workload(None, LiveRelease(detail=why), error=why)
    history = history_of((deploy or {}).get("metadata", {}).get("annotations") or {})
    image = ((deploy or {}).get("spec", {}).get("template", {}).get("spec", {})
             .get("containers") or [{}])[0].get("image", "")
    return Workload(deploy, live_release_of(deploy, history, image, f"{namespace}/{service}"),
                    history)


def live_in(p: Platform, clusters: Clusters, service: str, env: str) -> LiveRelease:
    return workload_in(p, clusters, service, env).live


async def path_of(p: Platform, temporal: Client, service: str,
                  clusters: Clusters | None = None) -> list[dict[str, Any]]:
    """Each environment of the path (`path_order`), read at once."""
    clusters = clusters or Clusters(p)
    return list(await asyncio.gather(*(_env_row(p, temporal, clusters, service, env)
                                       for env in path_order(p))))


async def _env_row(p: Platform, temporal: Client, clusters: Clusters, service: str,
                   env: str) -> dict[str, Any]:
    path = p.promotion.get(env)
    live = await asyncio.to_thread(live_in, p, clusters, service, env)
    row: dict[str, Any] = {
        "env": env, "from": path.source if path else None,
        "soak": str(path.soak) if path else None, "auto": bool(path and path.auto),
        "live": live.model_dump(mode="json")}
    last = await _last(temporal, naming.workflow_id(service, env))
    row["operation"] = ({"operation": last.operation.value, "version": last.version,
                         "outcome": last.outcome, "stage": last.stage} if last else None)
    if path and path.auto:
        row["auto_promotion"] = await auto_promotion(temporal, service, env)
    return row


async def _last(temporal: Client, workflow_id: str) -> Any:
    try:
        return await operations_client.status(temporal, workflow_id)
    except RPCError:
        return None


async def auto_promotion(temporal: Client, service: str, env: str) -> dict[str, Any] | None:
    """The automatic promotion of SERVICE into ENV (running or last), as its report says."""
    workflow_id = auto_workflow_id(service, env)
    try:
        report = await operations_client.query(temporal.get_workflow_handle(workflow_id),
                                               PROMOTION_REPORT)
    except RPCError:
        return None
    except Exception:  # noqa: BLE001 - a query failing on a closed run the worker cannot load
        return None
    return {"workflow_id": workflow_id, **report.model_dump(
        mode="json", include={"outcome", "stage", "detail", "soak_until", "superseded"}),
        "version": report.candidate.version if report.candidate else ""}


def path_table(service: str, rows: list[dict[str, Any]]) -> Table:
    table = new_table(f"{service}: {' → '.join(r['env'] for r in rows)}", title_justify="left")
    for column in ("env", "live", "since (UTC)", "health", "last operation", "promotion"):
        table.add_column(column)
    for r in rows:
        live = r["live"]
        version = (f"{live['version']} ({live['commit'][:12]})" if live["commit"]
                   else (live["image"].rsplit("@", 1)[-1][:19] if live["image"] else "-"))
        health = "healthy" if live["healthy"] else (live["detail"] or "-")
        op = r["operation"]
        last = f"{op['operation']} {op['version']}: {op['outcome']}" if op else "-"
        promo = f"from {r['from']}, soak {r['soak']}" + (", auto" if r["auto"] else "") if r["from"] else ""
        auto = r.get("auto_promotion")
        if auto:
            promo += f"\n{auto['version']}: {auto['stage'] if auto['outcome'] == 'running' else auto['outcome']}"
        table.add_row(r["env"], version, (live["since"] or "-")[:19].replace("T", " "), health, last,
                      promo)
    return table


def show_path(p: Platform, service: str, as_json: bool) -> None:
    rows = session.run(_rows(p, service))
    emit({"service": service, "path": rows}, as_json, None if as_json else path_table(service, rows))


async def _rows(p: Platform, service: str) -> list[dict[str, Any]]:
    return await path_of(p, await session.client(p), service)
