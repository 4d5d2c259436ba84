"""Run every stand-in of one sandbox world, each on its own loopback port.

Each stand-in is the subpackage of its name; its `app.create_app(world)` builds it.
`Sandbox(settings).start()` runs them in a background thread (the pytest
fixture); `python -m sandbox` runs them in the foreground (`kepler dev up`).
Ports are bound before any app starts, so each stand-in knows the others' URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from sandbox.common import Audit, Faults, with_sandbox_routes
from sandbox.http_client import close_shared_client
from sandbox.world import STANDINS, SandboxSettings, World


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn given a socket leaves Nagle on; the connections accepted from this one inherit
    # TCP_NODELAY, so a response's header and body writes are not held for the client's
    # delayed ACK (40 ms a request before: bench/RESULTS.md, issue 31)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Sandbox:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.world = World(settings=settings)
        self._sockets: dict[str, socket.socket] = {}
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        modules = {name: importlib.import_module(f"sandbox.{name}.app") for name in settings.served()}
        factories = {name: module.create_app for name, module in modules.items()}
        if "kubernetes" in modules:
            for name in settings.extra_clusters():
                factories[name] = lambda world, n=name: modules["kubernetes"].create_app(world, n)
        for name in factories:
            sock = _bind(settings.host, settings.ports.get(name, 0))
            self._sockets[name] = sock
            self.world.urls[name] = f"http://{settings.host}:{sock.getsockname()[1]}"
            self.world.faults[name] = Faults()
            state = self.world.state_path(name)
            self.world.audits[name] = Audit(state / "audit.jsonl" if state else None)
        self.apps = {
            name: with_sandbox_routes(create_app(self.world),
                                      self.world.faults[name], self.world.audits[name])
            for name, create_app in factories.items()
        }
        self.bridge: Any = None  # sandbox.cluster.bridge.Bridge on a real cluster
        if settings.real_cluster is not None:
            from sandbox.cluster.bridge import Bridge

            self.bridge = Bridge(self.world, settings.real_cluster)

    @property
    def urls(self) -> dict[str, str]:
        return dict(self.world.urls)

    async def _start_bridge(self) -> asyncio.Task[None] | None:
        """Run the real cluster's bridge; return once it has listed what it mirrors."""
        if self.bridge is None:
            return None
        task = asyncio.create_task(self.bridge.run())
        synced = asyncio.create_task(self.bridge.synced.wait())
        await asyncio.wait({task, synced}, timeout=self.settings.real_cluster_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.bridge.aclose()
            if task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"the real cluster bridge failed: {task.exception()!r}")
            raise RuntimeError(f"the real cluster at {self.bridge.api.server} did not answer "
                               f"(last errors: {self.bridge.mirror.errors})")
        return task

    async def _stop_bridge(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.bridge.aclose()

    async def serve(self) -> None:
        self._stop = asyncio.Event()
        bridge = await self._start_bridge()
        for name, app in self.apps.items():
            # loopback only: no proxy in front, no access log (each one's middleware and log
            # call were a few per cent of the stand-ins' CPU at 200 releases at once)
            config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                    proxy_headers=False, timeout_graceful_shutdown=2)
            server = uvicorn.Server(config)
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            self._servers.append(server)
        tasks = [asyncio.create_task(s.serve(sockets=[self._sockets[n]]))
                 for s, n in zip(self._servers, self.apps)]
        while not all(s.started for s in self._servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        if not all(s.started for s in self._servers):
            failed = [n for s, n in zip(self._servers, self.apps) if not s.started]
            await self._stop_bridge(bridge)
            raise RuntimeError(f"stand-ins failed to start: {', '.join(failed)}")
        self._started.set()
        await self._stop.wait()
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        await self._stop_bridge(bridge)
        await close_shared_client()

    def stop_serving(self) -> None:
        self._stop.set()

    def start(self, timeout: float = 20.0) -> "Sandbox":
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve())
            except BaseException as e:  # surfaced to the starting thread
                self._error = e
                self._started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="kepler-sandbox", daemon=True)
        self._thread.start()
        if self.bridge is not None:
            timeout += self.settings.real_cluster_timeout
        if not self._started.wait(timeout):
            raise TimeoutError("sandbox did not start")
        if self._error:
            raise RuntimeError(f"sandbox failed to start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self.stop_serving)
            self._thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--urls-file", type=Path, required=True,
                        help="written with the URL of each stand-in once all listen")
    for name in STANDINS:
        parser.add_argument(f"--{name}-port", type=int, default=0)
    parser.add_argument("--registry-url", default=None,
                        help="a real registry to use instead of the stand-in")
    real = parser.add_mutually_exclusive_group()
    real.add_argument("--real-cluster", type=Path, default=None, metavar="KUBECONFIG",
                      help="play the world on this real cluster (one started with Kepler's "
                           "stages: sandbox/cluster) instead of the Kubernetes stand-in")
    real.add_argument("--start-real-cluster", action="store_true",
                      help="start a real cluster (`make cluster` builds it) afresh in "
                           "STATE_DIR/real-cluster (kubeconfig: STATE_DIR/real-cluster/kubeconfig), "
                           "play the world on it and stop it on exit")
    args = parser.parse_args(argv)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    cluster = _start_real_cluster(args.state_dir / "real-cluster") if args.start_real_cluster else None
    try:
        _serve(args, cluster.kubeconfig if cluster else args.real_cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _start_real_cluster(state_dir: Path) -> Any:
    import shutil

    from sandbox.cluster import RealCluster

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt  # RealCluster.start() stops what it started

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        shutil.rmtree(state_dir, ignore_errors=True)  # a fresh cluster each run
        cluster = RealCluster(state_dir, stages="sandbox")
        cluster.start()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"real cluster: export KUBECONFIG={cluster.kubeconfig}", flush=True)
    return cluster


def _serve(args: argparse.Namespace, real_cluster: Path | None) -> None:
    settings = SandboxSettings(
        host=args.host, state_dir=args.state_dir,
        ports={n: getattr(args, f"{n}_port") for n in STANDINS},
        registry_url=args.registry_url,
        build_seconds=2.0, seconds_per_replica=1.0, real_cluster=real_cluster,
    )
    sandbox = Sandbox(settings)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sandbox.stop_serving)
        serving = asyncio.create_task(sandbox.serve())
        while not sandbox._started.is_set():
            if serving.done():  # it failed to start (its error) or was stopped first
                await serving
                return
            await asyncio.sleep(0.05)
        tmp = args.urls_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(sandbox.urls))
        tmp.replace(args.urls_file)
        await serving

    asyncio.run(run())
