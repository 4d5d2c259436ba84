"""One call for the sandbox world on a real cluster: a RealCluster with Kepler's pod stages and a
Sandbox bridged to it (SandboxSettings.real_cluster), started together, stopped together."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings

from .real import RealCluster


class RealWorld:
    """`with RealWorld(state_dir) as world:` (or `start()` ... `stop()`) runs
    `world.cluster` (RealCluster(stages="sandbox"), its state in STATE_DIR/cluster) and
    `world.sandbox` (the stand-ins of `settings` but Kubernetes, STATE_DIR/sandbox, bridged to
    the cluster). Kubernetes clients use `world.kubeconfig`; the other stand-ins are at
    `world.urls`. Pass `cluster=` to play on a cluster started elsewhere (it must run Kepler's
    stages; it is not stopped here). `cluster_options` go to RealCluster.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        settings: SandboxSettings | None = None,
        *,
        cluster: RealCluster | None = None,
        **cluster_options: Any,
    ) -> None:
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="kepler-real-world-"))
        self._own_cluster = cluster is None
        self.cluster = cluster or RealCluster(self.state_dir / "cluster", stages="sandbox", **cluster_options)
        if self.cluster.stages != "sandbox":
            raise ValueError('the sandbox world needs RealCluster(stages="sandbox")')
        self.settings = dataclasses.replace(settings or SandboxSettings())
        if self.settings.state_dir is None:
            self.settings.state_dir = self.state_dir / "sandbox"
        self.sandbox: Sandbox | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def urls(self) -> dict[str, str]:
        return self.sandbox.urls if self.sandbox else {}

    def start(self, timeout: float = 20.0) -> RealWorld:
        try:
            if self._own_cluster:
                self.cluster.start()
            self.settings.real_cluster = self.cluster.kubeconfig
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            self.sandbox = Sandbox(self.settings).start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self._own_cluster:
            self.cluster.stop()
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> RealWorld:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
