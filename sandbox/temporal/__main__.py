"""`python -m sandbox.temporal --state-dir DIR [--port 7233] [--namespace default]
[--search-attribute NAME=Type ...] [--ready-file FILE]`: run the real Temporal server on
PostgreSQL until SIGTERM (then both stop cleanly). The ready file, written once the namespace and
its search attributes exist, holds the frontend's address and the ports chosen."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import ClusterStartError, TemporalCluster, cache_dir, is_built


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.temporal")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, default=None, help="the frontend's gRPC port (default: a free one)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--ui-port", type=int, default=None, help="serve the Temporal web UI on this port")
    parser.add_argument("--search-attribute", action="append", default=[], metavar="NAME=TYPE")
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args(argv)
    if not is_built():
        print(f"the Temporal server is not built in {cache_dir()}: run `make temporal`", file=sys.stderr)
        return 1
    bad = [item for item in args.search_attribute if "=" not in item]
    if bad:
        parser.error(f"--search-attribute: {bad[0]!r} must be NAME=TYPE")
    attributes = dict(item.split("=", 1) for item in args.search_attribute)
    # SIGTERM (kepler dev down) interrupts whatever runs, a start included, so that the
    # cleanup below stops PostgreSQL and the server rather than leaving them behind
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cluster = TemporalCluster(args.state_dir, port=args.port, namespace=args.namespace,
                                  search_attributes=attributes, ui_port=args.ui_port)
        cluster.start()  # stops what it started when it fails or is interrupted
    except ClusterStartError as e:
        print(e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        if args.ready_file:
            Path(args.ready_file).write_text(json.dumps(
                {"address": cluster.address, "namespace": args.namespace, "ports": cluster.ports,
                 "ui_port": args.ui_port, "logs": str(cluster.logs)}, indent=2))
        print(f"Temporal server on {cluster.address} (namespace {args.namespace}); logs in {cluster.logs}",
              flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
