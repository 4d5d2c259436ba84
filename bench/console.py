"""Figure 5: the console's latency with many services, for one signed-in reader.

Setup, not measured: at least SERVICES services, each made by a real CreateService run on the
worker against the sandbox (those earlier figures created count; the rest are created here,
40 at once). Then the real console (`kepler console`: uvicorn, in its own process, as it is
deployed) on a free loopback port, on the bench's dev server, and one reader whose session
cookie is minted with the console's secret (as tests/console/conftest.py does: signing in with
a passkey is the browser tests' business). Each page: one warm-up request (the list's first
reads every create run's spec, then cached: reported apart), then REQUESTS in a row.

Baseline: the Temporal reads the list page makes (two visibility lists, starter/service.py
operations_of) made by a bare client in a process of its own (this one runs the worker): what
the console adds is rendering, HTTP and the spec lookups. A service's page also reads the
sandbox's Kubernetes (Deployments, pods, a log tail) and the service's history: no baseline."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from bench.common import Figure, Stack, create_services, percentile
from kepler.clients.temporal import connect
from starter.console.auth import SESSION_COOKIE, Tokens
from starter.console.reads import CREATED, MAX_SERVICES, RUNNING
from starter.service import operations_of
from tests.conftest import platform_yaml
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = int(os.environ.get("BENCH_CONSOLE_SERVICES", "200"))
REQUESTS = 50
LIST, SERVICE_PAGE = "/services", "/services/{name}"
LIST_TARGET_MS, PAGE_TARGET_MS = 500.0, 500.0
SECRET = "bench-console-secret"


async def ensure_services(st: Stack, count: int) -> tuple[list[str], float]:
    """The names of at least `count` live services, creating what is missing; setup seconds."""
    t0 = time.perf_counter()
    have = {r["service"] for r in await operations_of(st.client, CREATED, MAX_SERVICES)
            if r["operation"] == "create"}
    missing = [n for n in (f"cons{i:03d}" for i in range(count)) if n not in have]
    await create_services(st, missing[:max(0, count - len(have))])
    names = sorted({r["service"] for r in await operations_of(st.client, CREATED, MAX_SERVICES)
                    if r["operation"] == "create"})
    return names, time.perf_counter() - t0


def serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`kepler console` on the bench's kepler.yaml, as `kepler dev up` starts it."""
    env = {**os.environ, "KEPLER_CONFIG": str(config), "KEPLER_CONSOLE_SECRET": SECRET}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "starter.cli", "console", "--listen",
                                 f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def timed(reader: httpx.AsyncClient, path: str, count: int) -> tuple[list[float], int, str]:
    """Milliseconds of `count` GETs in a row, the last status and body."""
    times, status, body = [], 0, ""
    for _ in range(count):
        t0 = time.perf_counter()
        response = await reader.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        status, body = response.status_code, response.text
    return times, status, body


async def _bare_reads(address: str, namespace: str, count: int) -> list[float]:
    client = await connect(address, namespace)  # as the console's LazyClient connects
    times = []
    for _ in range(count + 1):  # the first warms the connection up, like the console's
        t0 = time.perf_counter()
        await operations_of(client, CREATED, MAX_SERVICES)
        await operations_of(client, RUNNING, MAX_SERVICES)
        times.append((time.perf_counter() - t0) * 1000)
    return times[1:]


async def bare_reads(st: Stack, count: int) -> list[float]:
    """The baseline, in a process of its own as the console is (this one runs the worker)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.console", st.platform.temporal.address,
        st.platform.temporal.namespace, str(count), cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the baseline's reads failed ({proc.returncode})")
    return [float(v) for v in json.loads(out)]


async def measure(st: Stack, count: int = SERVICES) -> list[Figure]:
    t_all = time.perf_counter()
    names, setup = await ensure_services(st, count)
    print(f"console: {len(names)} services ({setup:.0f} s to create the missing ones)")
    with tempfile.TemporaryDirectory(prefix="kepler-bench-console-") as tmp:
        config = Path(tmp) / "kepler.yaml"
        config.write_text(platform_yaml(st.urls, st.client.service_client.config.target_host, st.queue))
        port = free_port()
        log = Path(tmp) / "console.log"
        proc = serve(config, port, log)
        cookie = Tokens(SECRET.encode()).make("session", {"person": "dev"}, timedelta(hours=1))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         cookies={SESSION_COOKIE: cookie}) as reader:
                await _until_up(reader, proc, log)
                (cold,), status, body = await timed(reader, LIST, 1)
                shown = re.search(r"(\d+) of (\d+) services", body)
                if status != 200 or not shown or int(shown.group(2)) < count:
                    raise RuntimeError(f"GET {LIST}: {status}, {shown and shown.group(0)!r}")
                listed = int(shown.group(2))
                lists, _, _ = await timed(reader, LIST, REQUESTS)
                name = names[len(names) // 2]
                page = SERVICE_PAGE.format(name=name)
                (page_cold,), page_status, body = await timed(reader, page, 1)
                if page_status != 200 or name not in body:
                    raise RuntimeError(f"GET {page}: {page_status}")
                pages, _, _ = await timed(reader, page, REQUESTS)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.returncode not in (0, -15):
                print(f"console exited {proc.returncode}: {log.read_text()[-2000:]}")
    bare = await bare_reads(st, REQUESTS)
    spent = time.perf_counter() - t_all
    print(f"console: measured in {spent - setup:.0f} s after setup")
    how = (f"{listed} services, {REQUESTS} GETs in a row after one warm-up, one signed-in reader, "
           f"the console in its own process; setup {setup:.0f} s, measuring {spent - setup:.0f} s")
    return [
        Figure(f"console: GET {LIST} p95 ({listed} services)", percentile(lists, 0.95), "ms",
               f"<= {LIST_TARGET_MS:.0f} ms", percentile(lists, 0.95) <= LIST_TARGET_MS,
               percentile(bare, 0.95), f"{how}; baseline: its two visibility lists from a bare "
               f"client; first request (reads every create run's spec) {cold:.0f} ms"),
        Figure(f"console: GET {LIST} p50", percentile(lists, 0.5), "ms", "info", None,
               percentile(bare, 0.5)),
        Figure(f"console: GET {SERVICE_PAGE} p95", percentile(pages, 0.95), "ms",
               f"<= {PAGE_TARGET_MS:.0f} ms", percentile(pages, 0.95) <= PAGE_TARGET_MS,
               note=f"{page}, the same way; p50 {percentile(pages, 0.5):.0f} ms, "
               f"first {page_cold:.0f} ms"),
    ]


async def _until_up(reader: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the console exited: " + log.read_text()[-2000:])
        try:
            if (await reader.get("/login")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the console did not come up in 60 s")


if __name__ == "__main__":  # the baseline: python -m bench.console ADDRESS NAMESPACE COUNT
    print(json.dumps(asyncio.run(_bare_reads(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
