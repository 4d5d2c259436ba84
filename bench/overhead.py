"""Figure 1: what Kepler's orchestration costs over Temporal's own.

ReleaseVersion to staging (no approval) against the sandbox with rollouts that take no
time (seconds_per_replica=0) and the image already in the registry (no build), against
BenchBare running BARE_ACTIVITIES (8) no-op activities with the same retry policy, on the
same Temporal and worker process. Medians of `runs` each, after a warm-up. The release's
history size comes from the same runs."""

from __future__ import annotations

import statistics
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.bare import BARE_ACTIVITIES
from bench.common import (
    Figure, Stack, activity_count, bare, cached_commits, create_services, history,
    local_activity_count, release,
)
from kepler import search_attributes as sa

DORA = {sa.COMMIT.name, sa.COMMIT_TIME.name, sa.TEAM.name}  # what kepler metrics reads

SERVICE = "overhead"
TARGET = 1.0
EVENTS_TARGET = 60


async def measure(st: Stack, runs: int = 10) -> list[Figure]:
    await create_services(st, [SERVICE])
    commits = await cached_commits(st, SERVICE, 2)
    for sha in commits:  # warm-up: the first rollout from 0 replicas, imports, connections
        await release(st, SERVICE, sha)
    await bare(st, "bare-warmup", BARE_ACTIVITIES)
    # one of each in turn: both see the same machine (its speed drifts over a minute)
    times, bare_times, run = [], [], []
    for n in range(runs):
        seconds, report, run_id = await release(st, SERVICE, commits[n % 2])
        assert report.outcome == "succeeded", report
        times.append(seconds)
        bare_times.append(await bare(st, f"bare-{n}", BARE_ACTIVITIES))
    run = await history(st.client, f"{SERVICE}@staging", run_id)
    kepler, baseline = statistics.median(times), statistics.median(bare_times)
    steps = (f"{activity_count(run)} activities on the task queue and "
             f"{local_activity_count(run)} local reads a release")
    return [
        Figure("overhead: release wall time (median)", kepler, "s", f"<= {TARGET}x bare-8",
               kepler / baseline <= TARGET, baseline,
               f"{steps}; cached image, staging, 0 s/replica rollout"),
        Figure("history: release events (no approval)", float(len(run)), "events",
               f"<= {EVENTS_TARGET}", len(run) <= EVENTS_TARGET, note=steps),
        dora_cost(run),
    ]


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
