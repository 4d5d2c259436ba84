"""What every benchmark shares: one dev server, the sandbox (in its own process), the real
worker and the bare baseline worker in this process, and setup helpers (services, commits,
images pushed ahead so releases find them)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import gitlab
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.bare import BenchBare, noop
from kepler.models import CreateServiceRequest, ReleaseReport, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.previews import PreviewSettings
from kepler.search_attributes import ALL_KEYS
from kepler.settings import Platform, Secrets, parse_platform
from kepler.clients.temporal import data_converter
from sandbox.registry.oci import LABEL_REVISION, build_image, push_image
from kepler.clients import operations as ops
from tests.conftest import platform_yaml
from tests.helpers import stop_process
from worker import ACTIVITY_SLOTS, build_worker

BIN = Path(sys.executable).parent
QUEUE = "kepler-bench"
BARE_QUEUE = "bench-bare"
HARNESS_AGENT = "bench-harness"  # setup traffic; never matches the fault rules' client regex


@dataclass
class Stack:
    client: Client
    urls: dict[str, str]
    platform: Platform
    queue: str = QUEUE
    pids: dict[str, int] = field(default_factory=dict)  # process -> pid, for CPU accounting

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process of the stack has used so far."""
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @property
    def gitlab(self) -> gitlab.Gitlab:
        return gitlab.Gitlab(self.urls["gitlab"], private_token="sandbox-gitlab-token",
                             user_agent=HARNESS_AGENT)


@asynccontextmanager
async def sandbox_process(seconds_per_replica: float,
                          build_seconds: float) -> AsyncIterator[tuple[dict[str, str], int]]:
    with tempfile.TemporaryDirectory(prefix="kepler-bench-") as tmp:
        urls_file, log = Path(tmp) / "urls.json", (Path(tmp) / "sandbox.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sandbox_proc", "--urls-file", str(urls_file), "--seconds-per-replica", str(seconds_per_replica),
             "--build-seconds", str(build_seconds)],
            cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not urls_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start: "
                                       + (Path(tmp) / "sandbox.log").read_text()[-2000:])
                await asyncio.sleep(0.05)
            yield json.loads(urls_file.read_text()), proc.pid
        finally:
            stop_process(proc)
            log.close()


@asynccontextmanager
async def temporal(kind: str) -> AsyncIterator[tuple[Client, dict[str, int]]]:
    """A client of a fresh Temporal: the dev server ("dev"), or the real server on PostgreSQL
    ("server", sandbox/temporal, built by `make temporal`); the processes to account CPU to."""
    if kind == "dev":
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(BIN / "temporal"), search_attributes=ALL_KEYS,
            data_converter=data_converter(), dev_server_log_level="error")
        try:
            yield env.client, {"dev server": dev_server_pid()}
        finally:
            await env.shutdown()
        return
    from kepler.search_attributes import type_name
    from sandbox.temporal import TemporalCluster

    cluster = TemporalCluster(search_attributes={k.name: type_name(k) for k in ALL_KEYS})
    await asyncio.to_thread(cluster.start)
    try:
        client = await Client.connect(cluster.address, data_converter=data_converter())
        assert cluster.server is not None and cluster.postgres.proc is not None
        yield client, {"temporal server": cluster.server.popen.pid}
    finally:
        await asyncio.to_thread(cluster.__exit__, None, None, None)


@asynccontextmanager
async def stack(seconds_per_replica: float = 0.0, build_seconds: float = 0.1, *,
                server: str = "dev", workers: int = 1) -> AsyncIterator[Stack]:
    """Temporal (`server`: dev or server) + sandbox + `workers` real workers (queue QUEUE) and
    as many bare workers (BARE_QUEUE), in this process, each worker on its own connection."""
    import tempfile
    from contextlib import AsyncExitStack

    from starter.signing import sandbox_signers

    home = Path(tempfile.mkdtemp(prefix="kepler-bench-home-"))  # the sandbox's people and keys
    os.environ["KEPLER_HOME"] = str(home)
    sandbox_signers(home)
    async with sandbox_process(seconds_per_replica, build_seconds) as (urls, sandbox_pid), \
            temporal(server) as (client, server_pids):
        address = client.service_client.config.target_host
        platform = parse_platform(platform_yaml(urls, address, QUEUE))
        platform = platform.model_copy(update={"previews": PreviewSettings(env="staging")})
        with ThreadPoolExecutor(max_workers=ACTIVITY_SLOTS * workers, thread_name_prefix="bench-activity") as pool:
            async with AsyncExitStack() as running:
                for n in range(workers):
                    own = client if n == 0 else await Client.connect(address, data_converter=data_converter())
                    await running.enter_async_context(build_worker(own, platform, Secrets(), pool, QUEUE))
                    await running.enter_async_context(Worker(
                        own, task_queue=BARE_QUEUE, workflows=[BenchBare], activities=[noop],
                        activity_executor=pool, max_concurrent_activities=ACTIVITY_SLOTS))
                yield Stack(client, urls, platform, pids={"worker": os.getpid(), **server_pids,
                                                          "sandbox": sandbox_pid})


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dev_server_pid() -> int:
    """The `temporal server start-dev` child of this process (the SDK does not say)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().split(") ", 1)
        except OSError:
            continue
        if int(rest.split()[1]) == os.getpid() and comm.endswith("(temporal"):
            return int(stat.parent.name)
    return 0


def rss_mib() -> float:
    """Peak resident set size of this process (the worker, plus the small driver)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- setup ---------------------------------------------------------------------------------------

async def create_services(st: Stack, names: list[str], parallel: int = 40) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> None:
        async with gate:
            req = CreateServiceRequest(spec=ServiceSpec(name=name, team="bench", replicas=1),
                                       requested_by="carol")
            await (await ops.start(st.client, req, st.queue)).handle.result()

    await asyncio.gather(*(one(n) for n in names))


def push_commit(st: Stack, service: str, label: str) -> str:
    """A new commit on main (what a developer pushes); returns its sha."""
    project = st.gitlab.projects.get(f"demo/{service}")
    commit = project.commits.create({"branch": "main", "commit_message": label, "actions": [
        {"action": "create", "file_path": f"bench/{label}.txt", "content": label}]})
    return str(commit.id)


PUSHES_AT_ONCE = 8  # each push makes its own HTTP client: 200 at once took 160 MiB of the
# bench process's RSS, which never came back, and counted as the worker's


async def prepush_image(st: Stack, service: str, sha: str) -> None:
    """Put the commit's image in the registry, as a finished build would, so find_image hits."""
    image = build_image({"app.txt": sha.encode()}, {LABEL_REVISION: sha},
                        created="2025-01-01T00:00:00Z")
    async with _push_gate():
        await push_image(st.urls["registry"], f"demo/{service}", sha, image)


_gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _push_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    return _gates.setdefault(loop, asyncio.Semaphore(PUSHES_AT_ONCE))


async def cached_commits(st: Stack, service: str, count: int) -> list[str]:
    shas = []
    for n in range(count):
        sha = await asyncio.to_thread(push_commit, st, service, f"c{n}")
        await prepush_image(st, service, sha)
        shas.append(sha)
    return shas


# --- measuring -----------------------------------------------------------------------------------

async def release(st: Stack, service: str, ref: str, env: str = "staging") -> tuple[float, ReleaseReport, str]:
    """Start a release and wait for it: (seconds from start to result, report, run id)."""
    t0 = time.perf_counter()
    started = await ops.start(st.client, ReleaseRequest(service=service, env=env, ref=ref,
                                                        requested_by="carol"), st.queue)
    report = await started.handle.result()
    return time.perf_counter() - t0, report, started.run_id


async def bare(st: Stack, workflow_id: str, activities: int) -> float:
    t0 = time.perf_counter()
    await st.client.execute_workflow(BenchBare.run, activities, id=workflow_id,
                                     task_queue=BARE_QUEUE)
    return time.perf_counter() - t0


async def history(client: Client, workflow_id: str, run_id: str | None = None) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events)


def activity_count(events: list[HistoryEvent]) -> int:
    return sum(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED for e in events)


def local_activity_count(events: list[HistoryEvent]) -> int:
    return sum(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
               and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
               for e in events)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figure:
    """One row of the table: `value` against `baseline` (ratio = value / baseline)."""
    name: str
    value: float
    unit: str
    target: str
    passed: bool | None
    baseline: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None
