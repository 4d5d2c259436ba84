"""The sandbox world: the settings and shared pieces all stand-ins of one run see.

Stand-ins talk to each other over HTTP through `world.urls` (Jenkins reads
GitLab and pushes to the registry; Kubernetes reads image labels from the
registry), so pointing one at a real system works the same way. What only the
simulation can know (which pods run, how traffic is weighted) is shared
in-process through `world.components`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.common import Audit, Faults

STANDINS: tuple[str, ...] = ("gitlab", "jenkins", "registry", "kubernetes", "prometheus")


@dataclass
class SandboxSettings:
    host: str = "127.0.0.1"
    state_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)  # 0 or missing: a free port
    gitlab_token: str = "sandbox-gitlab-token"
    jenkins_user: str = "kepler"
    jenkins_token: str = "sandbox-jenkins-token"
    # A real registry (e.g. Debian's docker-registry) to use instead of the stand-in.
    registry_url: str | None = None
    build_seconds: float = 0.5
    seconds_per_replica: float = 0.2
    progress_deadline_scale: float = 1.0  # tests shrink progressDeadlineSeconds
    traffic_rps: float = 50.0
    standins: tuple[str, ...] = STANDINS
    # Several Kubernetes clusters, e.g. ("staging", "prod"): the first is served as
    # "kubernetes", each other one as "kubernetes-<name>" on its own port. Empty: one.
    clusters: tuple[str, ...] = ()
    # A real cluster's kubeconfig (sandbox/cluster: RealCluster(stages="sandbox")): the
    # Kubernetes stand-in is not served; sandbox/cluster/bridge.py marks the real pods from
    # their images' labels and mirrors the real objects into the traffic simulation that the
    # Prometheus stand-in reads. None: the stand-in.
    real_cluster: Path | None = None
    real_cluster_timeout: float = 30.0  # for the bridge's first list of the real objects

    def extra_clusters(self) -> list[str]:
        """The stand-in names of the clusters after the first."""
        return [f"kubernetes-{c}" for c in self.clusters[1:]]

    def served(self) -> tuple[str, ...]:
        """The stand-ins this run serves: all of `standins` but Kubernetes on a real cluster."""
        return tuple(n for n in self.standins if not (self.real_cluster and n == "kubernetes"))


@dataclass
class World:
    settings: SandboxSettings
    urls: dict[str, str] = field(default_factory=dict)
    faults: dict[str, Faults] = field(default_factory=dict)
    audits: dict[str, Audit] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)

    def state_path(self, name: str) -> Path | None:
        """Where stand-in `name` keeps its files, or None for an in-memory run."""
        if self.settings.state_dir is None:
            return None
        path = self.settings.state_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def registry_url(self) -> str:
        return self.settings.registry_url or self.urls["registry"]
