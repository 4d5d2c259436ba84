"""`python -m sandbox.cluster [STATE_DIR] [--stages sandbox]`: run a real cluster until
interrupted, for poking at it with kubectl (the kubeconfig path is printed). With
`--stages sandbox` its pods wait for a sandbox to judge their images:
`python -m sandbox --real-cluster KUBECONFIG ...` (or use `python -m sandbox --start-real-cluster`,
which runs both)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from . import RealCluster, binaries_dir, cache_dir
from .real import STAGE_SETS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.cluster")
    parser.add_argument("state_dir", nargs="?", default=None)
    parser.add_argument("--stages", choices=STAGE_SETS, default="kwok",
                        help="kwok: kwokctl's pod stages (every pod Ready at once); sandbox: "
                             "Kepler's (sandbox/cluster/stages.yaml)")
    args = parser.parse_args(argv)
    if binaries_dir() is None:
        print(f"not built in {cache_dir()}: run `make cluster`", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with RealCluster(args.state_dir, stages=args.stages) as cluster:
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"kubectl: {cluster.kubectl}")
        print(f"logs: {cluster.state_dir / 'logs'}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
