"""What the service page reads (`/services/{service}`), through the modules the CLI reads
with: the promotion path and each environment's Deployment (starter/promotion.py, the
Kubernetes client), the freeze in force (kepler/clients/freezes.py), the running operation's
`status` query and the history (Temporal visibility, starter/service.py), the verified audit
(starter/audit.py) and a pod's log tail (kepler/clients/pod_logs.py). Read-only.

Every read is bounded (so many operations, so many lines, a deadline) and fails on its own:
a section that cannot be read shows why, and the rest of the page stands. Environments are
read at once, the blocking Kubernetes calls in threads."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client

from kepler import search_attributes as sa
from kepler.audit import AuditRow
from kepler.clients import freezes, pod_logs
from kepler.clients import operations as operations_client
from kepler.clients.kube import Clusters
from kepler.models import Operation, OperationStatus
from kepler.promotion import LiveRelease, rolled_out, soak_left
from kepler.settings import Platform
from starter.audit import RunRecord, audit_of, read_run
from starter.promotion import Workload, auto_promotion, path_order, workload_in
from starter.service import operations_of

HISTORY_LIMIT = 50  # operations listed
AUDIT_OPERATIONS = 10  # the newest operations whose histories the audit reads
RUNNING_LIMIT = 10  # running operations whose status is asked
LOG_LINES = 50
KUBE_TIMEOUT = 5.0  # seconds, each Kubernetes request
DEADLINE = 10.0  # seconds, each section (one environment, the audit, ...)
KEPT_RUNS = 512  # closed runs' audit records kept (a closed run's history never changes)

T = TypeVar("T")


class SectionFailed(Exception):
    """A section that could not be read; its message is what the page shows instead."""


async def bounded(what: str, read: Awaitable[T], deadline: float = DEADLINE) -> T:
    """`read`, or SectionFailed naming `what` when it fails or takes longer than `deadline`."""
    try:
        return await asyncio.wait_for(read, deadline)
    except asyncio.TimeoutError:
        raise SectionFailed(f"{what}: no answer within {deadline:.0f}s") from None
    except SectionFailed:
        raise
    except Exception as e:  # noqa: BLE001 - one section's failure is shown, not the page's
        raise SectionFailed(f"{what}: {type(e).__name__}: {str(e)[:300]}") from None


@dataclass
class NextHop:
    """An environment promoted from this one, and how long until it may take what runs here."""
    env: str
    soak: str
    note: str
    ready: bool = False


@dataclass
class Logs:
    pod: str = ""
    lines: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Column:
    """One environment of the promotion path."""
    env: str
    source: str | None = None
    soak: str | None = None
    auto: bool = False
    live: LiveRelease = field(default_factory=LiveRelease)
    since: str = ""
    workload: dict[str, Any] | None = None  # replicas, rollout and resources of the Deployment
    unreachable: str = ""  # why the cluster could not be read
    next: list[NextHop] = field(default_factory=list)
    freeze: str = ""  # the freeze in force, described
    freeze_problem: str = ""
    last: dict[str, str] | None = None  # the newest operation here (visibility)
    auto_promotion: dict[str, Any] | None = None
    logs: Logs | None = None


@dataclass
class Running:
    row: dict[str, str]
    status: OperationStatus | None = None
    problem: str = ""
    approval_link: str = ""
    canary_link: str = ""


@dataclass
class ServiceView:
    columns: list[Column]
    history: list[dict[str, str]]
    history_problem: str = ""
    running: list[Running] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    audit_problem: str = ""
    decommissioned: bool = False


_CLUSTERS: dict[int, tuple[Platform, Clusters]] = {}
_RUNS: OrderedDict[str, RunRecord | None] = OrderedDict()
_IN_FLIGHT: dict[tuple[Any, ...], asyncio.Future[Any]] = {}


async def in_thread(key: tuple[Any, ...], read: Callable[..., T], *args: Any) -> T:
    """`read(*args)` in a thread, once per `key` at a time: a read still going (a slow
    cluster; a page past its deadline) is awaited again, not started twice, so a cluster
    that does not answer cannot take every thread while pages refresh."""
    future = _IN_FLIGHT.get(key)
    if future is None or future.done():
        future = _IN_FLIGHT[key] = asyncio.ensure_future(asyncio.to_thread(read, *args))

        def done(f: asyncio.Future[Any]) -> None:
            if _IN_FLIGHT.get(key) is f:
                del _IN_FLIGHT[key]
            if not f.cancelled():
                f.exception()  # retrieved: the awaiting page may have gone

        future.add_done_callback(done)
    result: T = await asyncio.shield(future)
    return result


def clusters_of(p: Platform) -> Clusters:
    """One set of Kubernetes clients per platform, kept between page reads."""
    kept = _CLUSTERS.get(id(p))
    if kept is None or kept[0] is not p:
        kept = _CLUSTERS[id(p)] = (p, Clusters(p))
    return kept[1]


async def kept_run(client: Client, op: dict[str, str]) -> RunRecord | None:
    """starter/audit.py read_run, kept once the run has closed."""
    key = f"{op['workflow_id']}/{op['run_id']}"
    if key in _RUNS:
        _RUNS.move_to_end(key)
        return _RUNS[key]
    run = await read_run(client, op)
    if op["status"] != "running":
        _RUNS[key] = run
        while len(_RUNS) > KEPT_RUNS:
            _RUNS.popitem(last=False)
    return run


def span(d: timedelta) -> str:
    """A duration as people read it: 2d 3h, 4h 5m, 6m 7s, 8s."""
    seconds = max(0, int(d.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    for big, small, units in ((days, hours, "dh"), (hours, minutes, "hm"), (minutes, seconds, "ms")):
        if big:
            return f"{big}{units[0]}" + (f" {small}{units[1]}" if small else "")
    return f"{seconds}s"


def workload_summary(deploy: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a Deployment: replicas, how far rolled out, resources."""
    spec, status = deploy.get("spec") or {}, deploy.get("status") or {}
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    return {"replicas": spec.get("replicas", 1), "ready": status.get("readyReplicas", 0),
            "updated": status.get("updatedReplicas", 0),
            "available": status.get("availableReplicas", 0), "rolled_out": rolled_out(deploy),
            "requests": dict(resources.get("requests") or {}),
            "limits": dict(resources.get("limits") or {})}


def next_hops(p: Platform, env: str, work: Workload, now: datetime) -> list[NextHop]:
    """Where what runs in `env` may be promoted, and the soak left before it may."""
    hops = []
    for target in path_order(p):
        path = p.promotion.get(target)
        if path is None or path.source != env:
            continue
        live = work.live
        left = soak_left(work.history, live.image, path.soak, now) if live.healthy else None
        if not live.healthy:
            note, ready = f"nothing live and healthy to promote to {target}", False
        elif left is None:
            note, ready = f"{live.image} is not the release recorded live: no soak counts", False
        elif left <= timedelta(0):
            note, ready = f"soaked ({span(path.soak)}): may be promoted to {target}", True
        else:
            note, ready = f"{span(left)} of soak left before {target}", False
        hops.append(NextHop(target, span(path.soak), note, ready))
    return hops


def read_logs(p: Platform, clusters: Clusters, service: str, env: str) -> Logs:
    """The last LOG_LINES of the newest started pod of the service's stable version
    (blocking: run in a thread)."""
    namespace = p.environment(env).namespace_for(service, env)
    try:
        core = k8s.CoreV1Api(clusters(env).api)
        pods = [pod for pod in pod_logs.service_pods(core, namespace, service, "stable")
                if pod.status and pod.status.phase in pod_logs.STARTED_PHASES]
        if not pods:
            return Logs(note=f"no started pods of {service} in {namespace}")
        pod = pods[-1]
        lines = pod_logs.read(core, namespace, pod.metadata.name, pod.spec.containers[0].name,
                              None, LOG_LINES, KUBE_TIMEOUT)
    except ApiException as e:
        return Logs(note=f"cannot read the logs in {namespace}: {pod_logs.reason(e)}"[:300])
    except Exception as e:  # noqa: BLE001 - an unreachable cluster is a note
        return Logs(note=f"cannot reach the cluster of {env}: {type(e).__name__}"[:300])
    return Logs(pod=pod.metadata.name, lines=[ln.text[:1000] for ln in lines[-LOG_LINES:]],
                note="" if lines else "no lines yet")


async def read_column(p: Platform, client: Client | None, service: str, env: str,
                      history: list[dict[str, str]], now: datetime) -> Column:
    path = p.promotion.get(env)
    column = Column(env=env, source=path.source if path else None,
                    soak=span(path.soak) if path else None, auto=bool(path and path.auto),
                    last=next((r for r in history if r["env"] == env), None))
    clusters = clusters_of(p)

    async def kube() -> None:
        try:
            work = await bounded(f"the cluster of {env}", in_thread(
                (id(p), service, env, "workload"), workload_in, p, clusters, service, env,
                KUBE_TIMEOUT))
        except SectionFailed as e:
            work = Workload(None, LiveRelease(detail=str(e)), error=str(e))
        column.live, column.unreachable = work.live, work.error
        column.since = f"{work.live.since:%Y-%m-%d %H:%M:%S} UTC" if work.live.since else ""
        column.workload = workload_summary(work.deploy) if work.deploy else None
        column.next = next_hops(p, env, work, now)
        if work.error:
            column.logs = Logs(note=f"no logs: the cluster of {env} cannot be read")
            return
        try:
            column.logs = await bounded(f"the logs in {env}", in_thread(
                (id(p), service, env, "logs"), read_logs, p, clusters, service, env))
        except SectionFailed as e:
            column.logs = Logs(note=str(e))

    async def temporal() -> None:
        if client is None:
            column.freeze_problem = "Temporal cannot be reached: whether it is frozen is unknown"
            return
        try:
            frozen = await bounded(f"the freeze of {env}", freezes.current(client, p, env, now))
            column.freeze = frozen.describe() if frozen else ""
        except SectionFailed as e:
            column.freeze_problem = f"whether {env} is frozen is unknown ({e})"
        if column.auto:
            try:
                column.auto_promotion = await bounded(
                    "the automatic promotion", auto_promotion(client, service, env))
            except SectionFailed:
                column.auto_promotion = None

    await asyncio.gather(kube(), temporal())
    return column


async def read_running(client: Client, service: str, row: dict[str, str]) -> Running:
    running = Running(row=row)
    try:
        status = await bounded(f"the status of {row['workflow_id']}",
                               operations_client.status(client, row["workflow_id"]))
    except SectionFailed as e:
        running.problem = str(e)
        return running
    running.status = status
    env = status.env or row["env"]
    if status.stage == "awaiting approval" and env and env != "all":
        running.approval_link = f"/services/{service}/{env}/approval"
    if status.operation == Operation.CANARY and status.outcome == "running":
        running.canary_link = f"/services/{service}/{env}/canary"
    return running


async def read_audit(p: Platform, client: Client, ops: list[dict[str, str]]) -> list[AuditRow]:
    return await audit_of(client, ops[:AUDIT_OPERATIONS], p.signers(), kept_run)


class UnknownService(Exception):
    """Kepler has no operation on this service."""


async def read_service(p: Platform, client: Client | None, service: str) -> ServiceView:
    """Everything the page shows of `service` (a valid name: it goes into a query)."""
    now = datetime.now(timezone.utc)
    history: list[dict[str, str]] = []
    problem = "Temporal cannot be reached" if client is None else ""
    if client is not None:
        try:
            history = await bounded("the history", operations_of(
                client, f"{sa.SERVICE.name} = '{service}'", HISTORY_LIMIT))
        except SectionFailed as e:
            problem = str(e)
        if not problem and not history:
            raise UnknownService(service)
    view = ServiceView(columns=[], history=history, history_problem=problem)
    view.decommissioned = next((r["operation"] == "decommission" for r in history
                                if r["operation"] in ("create", "decommission")
                                and r["outcome"] == "succeeded"), False)
    running_rows = [r for r in history if r["status"] == "running"][:RUNNING_LIMIT]

    async def audit() -> None:
        if client is None or not history:
            view.audit_problem = problem or "no operations"
            return
        try:
            view.audit = await bounded("the audit", read_audit(p, client, history))
        except SectionFailed as e:
            view.audit_problem = str(e)

    columns, running, _ = await asyncio.gather(
        asyncio.gather(*(read_column(p, client, service, env, history, now) for env in path_order(p))),
        asyncio.gather(*(read_running(client, service, r) for r in running_rows)) if client
        else _nothing(), audit())
    view.columns, view.running = list(columns), list(running)
    return view


async def _nothing() -> list[Running]:
    return []
