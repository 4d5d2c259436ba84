"""`make bench`: every figure on one dev server, then overhead and throughput again on the
real Temporal server on PostgreSQL (`make temporal`) with two workers, each against the bare
baseline on the same server; printed as one table and written to bench/RESULTS.md.
`python bench/run.py --only overhead,history` runs a subset, `--server dev` skips the real
server."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Figure, Stack, stack  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
ALL = ("overhead", "concurrency", "history", "reaction", "bluegreen", "previews", "console")
ON_SERVER = ("overhead", "concurrency", "reaction")  # what runs again on the real server


def number(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "baseline", "ratio", "target", "result")]
    for f in figures:
        rows.append((f.name, number(f.value, f.unit),
                     "" if f.baseline is None else number(f.baseline, f.unit),
                     "" if f.ratio is None else f"{f.ratio:.2f}x", f.target,
                     {True: "pass", False: "FAIL", None: "info"}[f.passed]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def measure_on(st: Stack, only: tuple[str, ...]) -> list[Figure]:
    """The figures of `only` that need a Temporal, in the order the table shows them."""
    figures: list[Figure] = []
    for name in ("overhead", "concurrency", "reaction", "bluegreen", "previews", "console"):
        if name in only:  # console after concurrency: its services count towards the 200
            module = importlib.import_module(f"bench.{name}")
            figures += await module.measure(st)
    return figures


async def on_server(only: tuple[str, ...]) -> list[Figure]:
    """The real Temporal server on PostgreSQL, two workers (and two bare ones)."""
    async with stack(server="server", workers=2) as st:
        figures = await measure_on(st, tuple(n for n in only if n in ON_SERVER))
    for f in figures:
        f.name = "server, 2 workers: " + f.name
    return figures


async def run(only: tuple[str, ...], servers: tuple[str, ...] = ("dev", "server")) -> list[Figure]:
    figures: list[Figure] = []
    if "dev" in servers:
        async with stack() as st:
            figures += await measure_on(st, only)
        if "history" in only:
            from bench import history
            figures += await history.measure()
    if "server" in servers and set(only) & set(ON_SERVER):
        from sandbox.temporal import cache_dir, is_built

        if is_built():
            figures += await on_server(only)
        else:
            print(f"the real Temporal server is not built in {cache_dir()}: `make temporal`, "
                  "then `make bench` measures it too")
    return figures


def write_results(figures: list[Figure], seconds: float, load: float) -> None:
    """Replace the 'Latest run' section of RESULTS.md; keep everything after it."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    notes = "\n".join(f"- {f.name}: {f.note}" for f in figures if f.note)
    latest = (f"## Latest run ({now}, {seconds:.0f} s, `make bench`)\n\n"
              f"2 cores; load average {load:.1f} when it started (other work on the machine "
              f"skews every figure: compare ratios, not absolutes).\n\n{table(figures)}\n\n"
              f"{notes}\n")
    head = "# Kepler benchmark results\n\nWritten by `make bench` (bench/run.py).\n\n"
    rest = ""
    if RESULTS.exists():
        text = RESULTS.read_text()
        marker = text.find("\n## ", text.find("## Latest run") + 1) if "## Latest run" in text else -1
        rest = text[marker + 1:] if marker >= 0 else ""
    RESULTS.write_text(head + latest + ("\n" + rest if rest else ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/run.py")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated: {', '.join(ALL)}")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    parser.add_argument("--server", default="dev,server",
                        help="comma-separated: dev (the dev server), server (the real Temporal server "
                             "on PostgreSQL, two workers; needs `make temporal`)")
    args = parser.parse_args()
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    servers = tuple(s.strip() for s in args.server.split(",") if s.strip())
    t0, load = time.perf_counter(), os.getloadavg()[0]
    figures = asyncio.run(run(only, servers))
    print(table(figures))
    if not args.no_write:
        write_results(figures, time.perf_counter() - t0, load)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
