"""`python -m sandbox.cluster [STATE_DIR]`: run a real cluster until interrupted, for poking at it
with kubectl (the kubeconfig path is printed)."""

from __future__ import annotations

import signal
import sys
import threading

from . import RealCluster, binaries_dir, cache_dir


def main(argv: list[str]) -> int:
    if binaries_dir() is None:
        print(f"not built in {cache_dir()}: run `make cluster`", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with RealCluster(argv[0] if argv else None) as cluster:
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
