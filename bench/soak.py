"""`make bench-soak`: the longer soak of issue 9. Services each run one lifecycle (create,
then release after release of fresh commits, built by the sandbox's Jenkins) while 20 % of
Kepler's calls to every stand-in fail (10 % answered 503, 10 % connection dropped; the
rules of tests/reliability/test_faults.py, matched on Kepler's client User-Agents only).
Reports how many releases succeeded, failed and were lost (not done within the timeout).

    python bench/soak.py [--services 10] [--releases 10] [--fault-rate 0.2]"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, create_services, percentile, push_commit, release, stack  # noqa: E402
from sandbox.world import STANDINS  # noqa: E402

KEPLER_CLIENTS = r"^(python-gitlab|python-requests|OpenAPI-Generator|kepler)/"
RELEASE_TIMEOUT = 300.0


def set_faults(st: Stack, rate: float) -> int:
    """Install the rules (rate 0: clear them); returns the hits of the rules removed."""
    hits = 0
    for name in STANDINS:
        url = f"{st.urls[name]}/_sandbox/faults"
        hits += sum(r["hits"] for r in httpx.get(url).json())
        httpx.delete(url).raise_for_status()
        if rate:
            for rule in ({"status": 503}, {"drop": True}):
                httpx.post(url, json={**rule, "probability": rate / 2, "count": None,
                                      "client": KEPLER_CLIENTS}).raise_for_status()
    return hits


async def lifecycle(st: Stack, service: str, releases: int) -> list[tuple[str, float]]:
    outcomes = []
    for n in range(releases):
        sha = await asyncio.to_thread(push_commit, st, service, f"soak{n}")
        try:
            seconds, report, _ = await asyncio.wait_for(release(st, service, sha), RELEASE_TIMEOUT)
            outcomes.append((report.outcome, seconds))
        except asyncio.TimeoutError:
            outcomes.append(("lost", RELEASE_TIMEOUT))
        except Exception as e:  # noqa: BLE001 - a failed release is a figure, not a crash
            outcomes.append((f"failed: {str(getattr(e, 'cause', None) or e)[:200]}", 0.0))
    return outcomes


async def soak(services: int, releases: int, rate: float) -> int:
    async with stack(seconds_per_replica=0.05, build_seconds=0.1) as st:
        names = [f"soak{n:02d}" for n in range(services)]
        set_faults(st, rate)
        t0 = time.perf_counter()
        try:
            await create_services(st, names)  # under faults too
            created = time.perf_counter() - t0
            results = await asyncio.gather(*(lifecycle(st, n, releases) for n in names))
        finally:
            hits = set_faults(st, 0)
        wall = time.perf_counter() - t0
    outcomes = [o for per_service in results for o in per_service]
    counts = Counter("failed" if o.startswith("failed") else o for o, _ in outcomes)
    times = [s for o, s in outcomes if o == "succeeded"]
    print(f"soak: {services} services x {releases} releases under {rate:.0%} injected faults "
          f"({hits} faults hit), {wall:.0f} s (services created in {created:.0f} s)")
    print(f"  succeeded {counts['succeeded']}, failed {len(outcomes) - counts['succeeded'] - counts['lost']}, "
          f"lost {counts['lost']} of {len(outcomes)}")
    print(f"  per release: p50 {percentile(times, 0.5):.1f} s, p95 {percentile(times, 0.95):.1f} s")
    for outcome, _ in outcomes:
        if outcome != "succeeded":
            print(f"  - {outcome}")
    return 0 if counts["succeeded"] == len(outcomes) else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/soak.py")
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--releases", type=int, default=10, help="per service, one after another")
    parser.add_argument("--fault-rate", type=float, default=0.2)
    args = parser.parse_args()
    code = asyncio.run(soak(args.services, args.releases, args.fault_rate))
    sys.stdout.flush()
    import os
    os._exit(code)  # temporalio/sdk-python#300: never let interpreter exit change the code


if __name__ == "__main__":
    main()
