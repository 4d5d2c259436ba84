"""RealCluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes
and the pod lifecycle), built by build.sh, started on free loopback ports with their state, logs
and a kubeconfig under one state directory."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from . import files
from .procs import ClusterStartError, Proc, wait_for
from .versions import cache_dir, is_built, istio_crds_file, kwok_logs_crd_file, kwok_stages_file

HOST = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.1/16"  # kwok writes pod IPs from it; nothing is ever sent to them
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Kepler's pod stages (the sandbox world: see the file), used with stages="sandbox"
SANDBOX_STAGES = Path(__file__).resolve().parent / "stages.yaml"
STAGE_SETS = ("kwok", "sandbox")


class RealCluster:
    """`with RealCluster(state_dir) as cluster:` or `cluster.start()` ... `cluster.stop()`.

    After start(): `kubeconfig` (a file for kubectl and the Python client), `server` (https URL),
    `token` (an admin in system:masters), `kubectl` (the built binary), `node_names`.

    `stages` picks what kwok does with pods: "kwok" (kwokctl's defaults: every pod Running and
    Ready at once, Job pods Succeeded) or "sandbox" (sandbox/cluster/stages.yaml: a pod waits in
    ContainerCreating until the bridge marks it with what its image does; see bridge.py).
    Either way kwok serves `pods/log` from the files kwok Logs objects name (podlogs.py).
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        nodes: int = 1,
        start_timeout: float = 240.0,
        install_istio_crds: bool = True,
        stages: str = "kwok",
    ) -> None:
        if stages not in STAGE_SETS:
            raise ValueError(f"stages must be one of {STAGE_SETS}, not {stages!r}")
        if not is_built():
            raise ClusterStartError(f"the control plane is not built in {cache_dir()}: run `make cluster`")
        self.root = cache_dir()
        self.bin = self.root / "bin"
        self.kubectl = self.bin / "kubectl"
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="kepler-k8s-"))
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.start_timeout = start_timeout
        self.install_istio_crds = install_istio_crds
        self.stages = stages
        self.procs: list[Proc] = []
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.server = ""
        self.token = ""
        self.ports: dict[str, int] = {}
        self._opener = _NO_PROXY

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> RealCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.procs:
            raise RuntimeError("already started")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this cluster started, newest first, and wait for each."""
        while self.procs:
            self.procs.pop().stop()
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        d = self.state_dir
        for sub in ("logs", "pki", "apiserver-certs", "etcd"):
            (d / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ports = {
            "etcd": files.free_port(),
            "etcd-peer": files.free_port(),
            "apiserver": files.free_port(),
            "kwok": files.free_port(),
        }

        etcd = self._spawn("etcd", self._etcd_args())
        etcd_url = f"http://{HOST}:{self.ports['etcd']}"
        wait_for("etcd /health", lambda: _etcd_healthy(etcd_url), deadline, [etcd])

        admin = files.new_identity("kepler-admin", "system:masters")
        controller_manager = files.new_identity("system:kube-controller-manager", "system:masters")
        scheduler = files.new_identity("system:kube-scheduler")
        kwok = files.new_identity("kwok-controller", "system:masters")
        files.write_token_file(d / "pki" / "tokens.csv", [admin, controller_manager, scheduler, kwok])
        files.write_service_account_keys(d / "pki" / "sa.key", d / "pki" / "sa.pub")
        self.token = admin.token
        self.server = f"https://{HOST}:{self.ports['apiserver']}"

        apiserver = self._spawn("kube-apiserver", self._apiserver_args(etcd_url))
        # --cert-dir: the API server writes a self-signed serving certificate, followed by the CA
        # that signed it, before it listens; that file is the CA bundle the clients trust
        cert = d / "apiserver-certs" / "apiserver.crt"
        wait_for(f"{cert}", lambda: cert.is_file() and b"END CERTIFICATE" in cert.read_bytes(), deadline, [apiserver])
        ca_pem = cert.read_bytes()
        (d / "pki" / "ca.crt").write_bytes(ca_pem)
        # no proxy: the cluster is on loopback whatever the environment says
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=ca_pem.decode()))
        )
        wait_for("kube-apiserver /readyz", lambda: self._get("/readyz")[0] == 200, deadline, [etcd, apiserver])

        files.write_kubeconfig(self.kubeconfig, files.kubeconfig(self.server, ca_pem, admin.name, admin.token))
        kubeconfigs: dict[str, Path] = {}
        for name, ident in (("controller-manager", controller_manager), ("scheduler", scheduler), ("kwok", kwok)):
            kubeconfigs[name] = d / "pki" / f"{name}.kubeconfig"
            files.write_kubeconfig(kubeconfigs[name], files.kubeconfig(self.server, ca_pem, ident.name, ident.token))

        self._spawn("kube-controller-manager", self._controller_manager_args(kubeconfigs["controller-manager"]))
        self._spawn("kube-scheduler", self._scheduler_args(kubeconfigs["scheduler"]))
        # kwok watches Logs objects from its start (--enable-crds=Logs): their CRD comes first
        self._apply_crds(kwok_logs_crd_file(self.root), deadline)
        self._spawn("kwok", self._kwok_args(kubeconfigs["kwok"], self._kwok_config()))

        wait_for(
            "namespace default and its default service account",
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            deadline,
            self.procs,
        )
        for name in self.node_names:
            status, body = self._request("POST", "/api/v1/nodes", files.fake_node(name))
            if status not in (200, 201, 409):
                raise ClusterStartError(f"creating node {name}: HTTP {status}: {body}")
        for name in self.node_names:
            wait_for(f"node {name} Ready (set by kwok)", lambda n=name: self._node_ready(n), deadline, self.procs)
        if self.install_istio_crds:
            self._install_istio_crds(deadline)

    # --- component command lines -------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, [str(self.bin / name), *args], self.state_dir / "logs" / f"{name}.log", self.state_dir)
        self.procs.append(proc)
        return proc

    def _etcd_args(self) -> list[str]:
        client = f"http://{HOST}:{self.ports['etcd']}"
        peer = f"http://{HOST}:{self.ports['etcd-peer']}"
        return [
            "--name=kepler",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kepler={peer}",
            "--unsafe-no-fsync",  # a test cluster: durability across power loss is not wanted
        ]

    def _apiserver_args(self, etcd_url: str) -> list[str]:
        pki = self.state_dir / "pki"
        return [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # the `kubernetes` Service gets no Endpoints: they may not point at loopback, and
            # the API server listens on nothing else
            "--endpoint-reconciler-type=none",
            # kwok's node stage gives each node a Hostname address (its name, which resolves
            # nowhere) and an InternalIP (127.0.0.1, where kwok serves the kubelet API)
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_args(self, kubeconfig: Path) -> list[str]:
        pki = self.state_dir / "pki"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--cluster-name=kepler-real",
            "--controllers=*",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_args(self, kubeconfig: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            "--profiling=false",
            "--v=1",
        ]

    def _kwok_config(self) -> Path:
        """kwokctl's default stages (node-initialize, node-heartbeat-with-lease, pod-ready,
        pod-complete, pod-delete; see build.sh), or for "sandbox" its node stages with Kepler's
        pod stages, in one file under the state directory."""
        defaults = kwok_stages_file(self.root)
        if self.stages == "kwok":
            return defaults
        nodes = [doc for doc in yaml.safe_load_all(defaults.read_text())
                 if doc and doc["spec"]["resourceRef"]["kind"] == "Node"]
        path = self.state_dir / "kwok-stages.yaml"
        path.write_text(yaml.safe_dump_all(nodes, sort_keys=False) + "---\n" + SANDBOX_STAGES.read_text())
        return path

    def _kwok_args(self, kubeconfig: Path, config: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--config={config}",
            "--enable-crds=Logs",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={files.KWOK_NODE_ANNOTATION}={files.KWOK_NODE_ANNOTATION_VALUE}",
            "--node-lease-duration-seconds=40",
            # the node's kubelet endpoint is kwok itself on loopback: an API server request that
            # goes to "the kubelet" (logs, exec) never leaves 127.0.0.1
            f"--node-ip={HOST}",
            f"--node-port={self.ports['kwok']}",
            f"--server-address={HOST}:{self.ports['kwok']}",
            f"--cidr={POD_CIDR}",
        ]

    # --- helpers ---------------------------------------------------------------------------

    def run_kubectl(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The built kubectl against this cluster; raises with its stderr when `check` and it fails."""
        argv = [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def _install_istio_crds(self, deadline: float) -> None:
        self._apply_crds(istio_crds_file(self.root), deadline)

    def _apply_crds(self, crds: Path, deadline: float) -> None:
        # server-side: client-side apply would also store each CRD whole in its last-applied
        # annotation; DestinationRule's is 192 KB at istio.io/api v1.32.0 (measured; it still
        # fits), close to the 256 KiB that all of an object's annotations may take together
        self.run_kubectl("apply", "--server-side", "--field-manager=kepler-real-cluster", "-f", str(crds))
        remaining = max(1.0, deadline - time.monotonic())
        self.run_kubectl(
            "wait", "--for=condition=Established", f"--timeout={int(remaining)}s", "-f", str(crds), timeout=remaining + 30
        )

    def _node_ready(self, name: str) -> bool:
        status, node = self._get(f"/api/v1/nodes/{name}")
        if status != 200 or not isinstance(node, dict):
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _get(self, path: str) -> tuple[int, Any]:
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - https to our own server
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=10) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _etcd_healthy(url: str) -> bool:
    with _NO_PROXY.open(url + "/health", timeout=5) as resp:
        return bool(json.loads(resp.read()).get("health") == "true")
