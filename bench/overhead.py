"""Figure 1: what Kepler's orchestration costs over Temporal's own.

ReleaseVersion to staging (no approval) against the sandbox with rollouts that take no
time (seconds_per_replica=0) and the image already in the registry (no build), against
BenchBare running the same number of no-op activities with the same retry policy, on the
same dev server and worker process. Medians of `runs` each, after a warm-up."""

from __future__ import annotations

import statistics
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.common import (
    Figure, Stack, activity_count, bare, cached_commits, create_services, history, release,
)
from kepler import search_attributes as sa

DORA = {sa.COMMIT.name, sa.COMMIT_TIME.name, sa.TEAM.name}  # what kepler metrics reads

SERVICE = "overhead"
TARGET = 1.3


async def measure(st: Stack, runs: int = 10) -> tuple[list[Figure], dict[str, float]]:
    await create_services(st, [SERVICE])
    commits = await cached_commits(st, SERVICE, 2)
    for sha in commits:  # warm-up: the first rollout from 0 replicas, imports, connections
        await release(st, SERVICE, sha)
    times, events, activities, run = [], 0, 0, []
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
    return [figure, dora_cost(run)], {"release_events": float(events),
                                      "release_activities": float(activities)}


def dora_cost(events: list[Any]) -> Figure:
    """What writing the DORA metrics' search attributes costs a release: events (and so
    visibility writes) of their own — none, they ride in the outcome's upsert — and bytes."""
    upserts = [e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
               for e in events if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    carrying = [u for u in upserts if DORA & set(u)]
    own = [u for u in carrying if set(u) <= DORA]  # an upsert only for them: an extra event
    size = sum(len(k) + u[k].ByteSize() for u in carrying for k in DORA & set(u))
    return Figure("history: DORA attributes, own events a release", float(len(own)), "events",
                  "0", not own and len(carrying) == 1,
                  note=f"{len(upserts)} upserts a release; {len(carrying)} carries "
                       f"{', '.join(sorted(DORA))} with KeplerOutcome: {size} bytes more in it")
