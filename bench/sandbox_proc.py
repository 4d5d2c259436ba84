"""The sandbox in its own process, so the worker process's CPU and RSS are the worker's:
`python -m bench.sandbox_proc --state-dir D --urls-file F [--seconds-per-replica S]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_proc")
    parser.add_argument("--state-dir", type=Path, default=None, help="default: in memory")
    parser.add_argument("--urls-file", type=Path, required=True)
    parser.add_argument("--seconds-per-replica", type=float, default=0.0)
    parser.add_argument("--build-seconds", type=float, default=0.1)
    args = parser.parse_args()
    box = Sandbox(SandboxSettings(state_dir=args.state_dir, build_seconds=args.build_seconds,
                                  seconds_per_replica=args.seconds_per_replica))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, box.stop_serving)
        serving = asyncio.create_task(box.serve())
        await loop.run_in_executor(None, box._started.wait)
        tmp = args.urls_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(box.urls))
        tmp.replace(args.urls_file)
        await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
