"""Figure 2: 200 concurrent releases of distinct services on one worker process, against
200 concurrent bare workflows (same activity count) on the same worker and dev server.

Setup, not measured: create the services and push each one's image ahead (cached)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable

from bench.bare import BARE_ACTIVITIES
from bench.common import (
    Figure, Stack, bare, create_services, current_rss_mib, percentile, prepush_image, release,
)

TIMEOUT = 600.0  # a release not done by then counts as lost
THROUGHPUT_TARGET, RSS_TARGET_MIB = 0.75, 300.0


def head_of_main(st: Stack, service: str) -> str:
    return str(st.gitlab.projects.get(f"demo/{service}").branches.get("main").commit["id"])


async def _timed(runs: list[Awaitable[float]]) -> tuple[float, list[float], int, int]:
    """(wall seconds, per-run seconds, failed, lost) of running everything at once."""
    async def guarded(run: Awaitable[float]) -> float | str:
        try:
            return await asyncio.wait_for(run, TIMEOUT)
        except asyncio.TimeoutError:
            return "lost"
        except Exception as e:  # noqa: BLE001 - counted, and shown
            return f"failed: {e}"

    t0 = time.perf_counter()
    results = await asyncio.gather(*(guarded(r) for r in runs))
    wall = time.perf_counter() - t0
    times = [r for r in results if isinstance(r, float)]
    failed = [r for r in results if isinstance(r, str) and r != "lost"]
    if failed:
        print(f"{len(failed)} failed, e.g. {failed[0]}")
    return wall, times, len(failed), results.count("lost")


async def measure(st: Stack, count: int = int(os.environ.get("BENCH_RELEASES", "200"))) -> list[Figure]:
    names = [f"conc{n:03d}" for n in range(count)]
    t0 = time.perf_counter()
    await create_services(st, names)
    shas = await asyncio.gather(*(asyncio.to_thread(head_of_main, st, n) for n in names))
    await asyncio.gather(*(prepush_image(st, n, sha) for n, sha in zip(names, shas)))
    print(f"setup: {count} services created and their images pushed in "
          f"{time.perf_counter() - t0:.0f} s")

    peak = current_rss_mib()
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, current_rss_mib())
            await asyncio.sleep(0.5)

    async def one(name: str, sha: str) -> float:
        seconds, report, _ = await release(st, name, sha)
        if report.outcome != "succeeded":
            raise RuntimeError(f"{name}: {report.outcome} {report.error}")
        return seconds

    async def bare_run(tag: str) -> tuple[float, list[float], int, dict[str, float]]:
        before = st.cpu_seconds()
        wall, times, failed, _ = await _timed(
            [bare(st, f"bare-conc-{tag}-{n}", activities) for n in range(count)])
        after = st.cpu_seconds()
        return wall, times, failed, {k: after[k] - before[k] for k in before}

    # The dev server slows down as executions pile up in its in-memory store (the same bare
    # run costs it ~40 ms of CPU a workflow before the releases and ~65 ms after), so the
    # bare ceiling is measured before and after the releases, and the baseline is the rate
    # over both: the bare figure at the server's state during the releases, not the
    # fresher or the more loaded one alone.
    activities = BARE_ACTIVITIES  # the fixed baseline (bench/bare.py), whatever a release runs
    first = await bare_run("before")
    sampler = asyncio.create_task(sample())
    cpu0 = st.cpu_seconds()
    wall, times, failed, lost = await _timed([one(n, s) for n, s in zip(names, shas)])
    cpu1 = st.cpu_seconds()
    sampling = False
    await sampler
    second = await bare_run("after")
    bare_wall = (first[0] + second[0]) / 2
    bare_times, bare_failed = first[1] + second[1], first[2] + second[2]
    cpu = [Figure(f"concurrency: CPU per release, {name}", (cpu1[name] - cpu0[name]) / count * 1000,
                  "ms", "info", None, (first[3][name] + second[3][name]) / 2 / count * 1000 or None,
                  "CPU time of the process over the run / releases (baseline: the bare runs)")
           for name in cpu0]
    tput = len(times) / wall
    bare_tput = len(bare_times) / (2 * bare_wall)  # over both runs
    print(f"bare runs: {first[0]:.1f} s before the releases, {second[0]:.1f} s after")
    return [
        Figure(f"concurrency: {count} releases, completion", wall, "s", "info", None, bare_wall),
        Figure("concurrency: throughput", tput, "rel/s", f">= {THROUGHPUT_TARGET}x bare-8",
               tput / bare_tput >= THROUGHPUT_TARGET,
               bare_tput, f"bare: {activities} activities a workflow, the rate over a run "
               f"before ({count / first[0]:.1f} rel/s) and after ({count / second[0]:.1f} rel/s) "
               f"the releases, {bare_failed} failed"),
        Figure("concurrency: p50 per release", percentile(times, 0.5), "s", "info", None,
               percentile(bare_times, 0.5)),
        Figure("concurrency: p95 per release", percentile(times, 0.95), "s", "info", None,
               percentile(bare_times, 0.95)),
        Figure("concurrency: worker RSS (peak while releasing)", peak, "MiB",
               f"<= {RSS_TARGET_MIB:.0f} MiB", peak <= RSS_TARGET_MIB,
               note="worker, bench driver and SDK core in one process; sandbox in its own"),
        Figure("concurrency: failed + lost", failed + lost, "", "0", failed + lost == 0),
        *cpu,
    ]
