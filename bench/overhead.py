"""Figure 1: what Kepler's orchestration costs over Temporal's own.

ReleaseVersion to staging (no approval) against the sandbox with rollouts that take no
time (seconds_per_replica=0) and the image already in the registry (no build), against
BenchBare running the same number of no-op activities with the same retry policy, on the
same dev server and worker process. Medians of `runs` each, after a warm-up."""

from __future__ import annotations

import statistics

from bench.common import (
    Figure, Stack, activity_count, bare, cached_commits, create_services, history, release,
)

SERVICE = "overhead"
TARGET = 1.3


async def measure(st: Stack, runs: int = 10) -> tuple[list[Figure], dict[str, float]]:
    await create_services(st, [SERVICE])
    commits = await cached_commits(st, SERVICE, 2)
    for sha in commits:  # warm-up: the first rollout from 0 replicas, imports, connections
        await release(st, SERVICE, sha)
    times, events, activities = [], 0, 0
    for n in range(runs):
        seconds, report, run_id = await release(st, SERVICE, commits[n % 2])
        assert report.outcome == "succeeded", report
        times.append(seconds)
        run = await history(st.client, f"{SERVICE}@staging", run_id)
        events, activities = len(run), activity_count(run)
    await bare(st, "bare-warmup", activities)
    bare_times = [await bare(st, f"bare-{n}", activities) for n in range(runs)]
    kepler, baseline = statistics.median(times), statistics.median(bare_times)
    figure = Figure("overhead: release wall time (median)", kepler, "s", f"<= {TARGET}x bare",
                    kepler / baseline <= TARGET, baseline,
                    f"{activities} activities, cached image, staging, 0 s/replica rollout")
    return [figure], {"release_events": float(events), "release_activities": float(activities)}
