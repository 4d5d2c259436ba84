"""TemporalCluster: the real Temporal server (frontend, history, matching and worker services, one
process) on PostgreSQL, started on loopback with its state, config and logs under one directory.

    state_dir/
      postgres/        the database cluster (postgres.py) and its generated password
      temporal.yaml    the server's config file (written at every start; 0600: it holds the password)
      dynamicconfig.yaml
      ports.json       the ports chosen at the first start, kept so a restart comes back on them
      logs/            postgres.log, temporal-server.log, schema.log

Both schemas are set up with the SQL tool (temporal and temporal_visibility, SQL visibility),
the namespace registered and the search attributes the caller names added to it.
`restart_server()` and `restart_postgres()` (each optionally a crash: kill -9) are what the
production-tier tests do to it mid-release.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import yaml

from sandbox.cluster.procs import ClusterStartError, Proc, wait_for

from .postgres import HOST, SUPERUSER, Postgres, write_private
from .versions import cache_dir, is_built

SCHEMAS = {"temporal": "postgresql/v12/temporal", "temporal_visibility": "postgresql/v12/visibility"}
SERVICES = ("frontend", "history", "matching", "worker")
# one port per service's gRPC and membership, the frontend's HTTP API, the server's metrics
PORT_NAMES = ("postgres", "metrics", "frontend_http",
              *(f"{s}_{kind}" for s in SERVICES for kind in ("grpc", "membership")))
# Prompt for a single-machine cluster: namespaces and search attributes visible at once after
# they are created (the defaults refresh every 10 s), the rest as in production.
DYNAMIC_CONFIG = {
    "system.namespaceCacheRefreshInterval": [{"value": "1s"}],
    "system.forceSearchAttributesCacheRefreshOnRead": [{"value": True}],
    "frontend.enableUpdateWorkflowExecution": [{"value": True}],
    "frontend.workerVersioningWorkflowAPIs": [{"value": True}],
    "system.enableDeploymentVersions": [{"value": True}],
}


def _free_port(taken: set[int]) -> int:
    """A free loopback port below 32768 and not in `taken`: the SQL schema keeps membership
    ports in a smallint, and the kernel's ephemeral range (what binding port 0 gives) starts
    above it."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise ClusterStartError("no free loopback port in 20000-32767")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((HOST, port)) == 0


class TemporalCluster:
    """`with TemporalCluster(state_dir, namespace="default", search_attributes={...}) as t:`;
    after start(), `t.address` is the frontend's host:port."""

    def __init__(self, state_dir: Path | str | None = None, *, port: int | None = None,
                 namespace: str = "default", search_attributes: dict[str, str] | None = None,
                 ui_port: int | None = None, start_timeout: float = 180.0) -> None:
        unknown = {k: v for k, v in (search_attributes or {}).items() if v not in INDEXED_TYPES}
        if unknown:  # before anything is made or started
            raise ClusterStartError(f"search attributes {unknown}: the type must be one of "
                                    f"{', '.join(INDEXED_TYPES)}")
        if not is_built():
            raise ClusterStartError(f"the Temporal server is not built in {cache_dir()}: run `make temporal`")
        self.bin = cache_dir() / "bin"
        self._own_state = state_dir is None  # a temporary directory, removed on __exit__
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="kepler-temporal-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o711)  # PostgreSQL's user reaches its own directory inside
        self.logs = self.state_dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.namespace = namespace
        self.search_attributes = dict(search_attributes or {})
        self.start_timeout = start_timeout
        self.ports = self._ports(port)
        self.address = f"{HOST}:{self.ports['frontend_grpc']}"
        self.postgres = Postgres(self.state_dir / "postgres", self.ports["postgres"], self.logs)
        self.server: Proc | None = None
        self.ui_port = ui_port
        self.ui: Proc | None = None

    def _ports(self, frontend: int | None) -> dict[str, int]:
        path = self.state_dir / "ports.json"
        try:
            ports: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            ports = {}
        if frontend:
            ports["frontend_grpc"] = frontend
        for name in PORT_NAMES:
            if name not in ports:
                ports[name] = _free_port(set(ports.values()))
        path.write_text(json.dumps(ports, indent=2))
        return ports

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> TemporalCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def start(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        try:
            if _port_open(self.ports["frontend_grpc"]):
                raise ClusterStartError(f"{self.address} is already in use")
            self.postgres.start(deadline)
            self._setup_schemas()
            self._write_config()
            self.start_server(deadline)
            asyncio.run(self._register(deadline))
            if self.ui_port:
                self.start_ui(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.ui is not None:
            ui, self.ui = self.ui, None
            ui.stop(grace=10)
        if self.server is not None:
            server, self.server = self.server, None
            server.stop(grace=20)
        self.postgres.stop()

    def start_server(self, deadline: float | None = None) -> None:
        deadline = deadline or time.monotonic() + self.start_timeout
        argv = [str(self.bin / "temporal-server"), "--config-file", str(self.state_dir / "temporal.yaml"),
                "--allow-no-auth", "start", *(a for s in SERVICES for a in ("--service", s))]
        self.server = Proc("temporal-server", argv, self.logs / "temporal-server.log", self.state_dir)
        wait_for("the Temporal frontend", lambda: _port_open(self.ports["frontend_grpc"]), deadline, [self.server])
        asyncio.run(self._wait_serving(deadline))

    def start_ui(self, deadline: float) -> None:
        """The Temporal web UI (ui-server, its assets embedded) on loopback at `ui_port`."""
        assert self.ui_port
        config = self.state_dir / "ui" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "kepler.yaml").write_text(yaml.safe_dump({
            "temporalGrpcAddress": self.address, "host": HOST, "port": self.ui_port, "enableUi": True,
            "defaultNamespace": self.namespace, "disableNewsFetch": True, "notifyOnNewVersion": False,
            "refreshInterval": "1m", "cors": {"cookieInsecure": True, "allowOrigins": [f"http://{HOST}:{self.ui_port}"]}}))
        argv = [str(self.bin / "temporal-ui-server"), "--root", str(config.parent), "--config", "config",
                "--env", "kepler", "start"]
        self.ui = Proc("temporal-ui-server", argv, self.logs / "temporal-ui-server.log", self.state_dir)
        wait_for("the Temporal UI", lambda: _port_open(self.ui_port or 0), deadline, [self.ui])

    def restart_server(self, crash: bool = False) -> None:
        """Stop the server (SIGTERM, or kill -9 when `crash`) and start it again on its ports."""
        if self.server is not None:
            server, self.server = self.server, None
            server.kill() if crash else server.stop(grace=20)
        self.start_server()

    def restart_postgres(self, crash: bool = False) -> None:
        """Stop PostgreSQL (fast shutdown, or kill -9 when `crash`) and start it again; the
        server stays up, retrying its connections meanwhile."""
        self.postgres.kill() if crash else self.postgres.stop()
        self.postgres.start(time.monotonic() + self.start_timeout)

    # --- setup -----------------------------------------------------------------------------

    def _sql_tool(self, database: str, *args: str) -> None:
        argv = [str(self.bin / "temporal-sql-tool"), "--plugin", "postgres12", "--endpoint", HOST,
                "--port", str(self.ports["postgres"]), "--user", SUPERUSER, "--database", database, *args]
        with (self.logs / "schema.log").open("a") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=300,  # noqa: S603
                                    env={**os.environ, "SQL_PASSWORD": self.postgres.password})
        if result.returncode != 0:
            raise ClusterStartError(f"temporal-sql-tool {' '.join(args)} on {database} failed; "
                                    f"see {self.logs / 'schema.log'}")

    def _setup_schemas(self) -> None:
        """Create both databases and their base schema once, then bring them to the newest
        version (update-schema is a no-op when they are current: a restart runs it again)."""
        for database, schema in SCHEMAS.items():
            marker = self.state_dir / "postgres" / f"{database}-created"  # one each: a failed
            if not marker.exists():  # second one does not make the first be created again
                self._sql_tool(database, "create-database")
                self._sql_tool(database, "setup-schema", "--version", "0.0")
                marker.touch()
            self._sql_tool(database, "update-schema", "--schema-name", schema)

    def _write_config(self) -> None:
        p = self.ports

        def store(database: str, conns: int) -> dict[str, object]:
            return {"sql": {"pluginName": "postgres12", "databaseName": database,
                            "connectAddr": f"{HOST}:{p['postgres']}", "connectProtocol": "tcp",
                            "user": SUPERUSER, "password": self.postgres.password,
                            "maxConns": conns, "maxIdleConns": conns, "maxConnLifetime": "1h"}}

        config = {
            "log": {"stdout": True, "level": "warn"},
            "persistence": {"defaultStore": "default", "visibilityStore": "visibility", "numHistoryShards": 4,
                            "datastores": {"default": store("temporal", 20),
                                           "visibility": store("temporal_visibility", 10)}},
            "global": {"membership": {"maxJoinDuration": "30s", "broadcastAddress": HOST},
                       "metrics": {"prometheus": {"framework": "tally", "timerType": "histogram",
                                                  "listenAddress": f"{HOST}:{p['metrics']}"}}},
            "services": {s: {"rpc": {"grpcPort": p[f"{s}_grpc"], "membershipPort": p[f"{s}_membership"],
                                     "bindOnIP": HOST,
                                     **({"httpPort": p["frontend_http"]} if s == "frontend" else {})}}
                         for s in SERVICES},
            "clusterMetadata": {
                "enableGlobalNamespace": False, "failoverVersionIncrement": 10,
                "masterClusterName": "active", "currentClusterName": "active",
                "clusterInformation": {"active": {"enabled": True, "initialFailoverVersion": 1,
                                                  "rpcName": "frontend", "rpcAddress": self.address}}},
            "dcRedirectionPolicy": {"policy": "noop"},
            "dynamicConfigClient": {"filepath": str(self.state_dir / "dynamicconfig.yaml"), "pollInterval": "10s"},
        }
        (self.state_dir / "dynamicconfig.yaml").write_text(yaml.safe_dump(DYNAMIC_CONFIG))
        write_private(self.state_dir / "temporal.yaml", yaml.safe_dump(config, sort_keys=False))

    async def _wait_serving(self, deadline: float) -> None:
        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
        from temporalio.client import Client

        async def serving() -> bool:
            client = await Client.connect(self.address, namespace="temporal-system")
            await client.workflow_service.get_system_info(GetSystemInfoRequest())
            return True

        await _until("the Temporal server to serve", serving, deadline, self.server)

    async def _register(self, deadline: float) -> None:
        """The namespace (once) and the search attributes it lacks."""
        from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
        from temporalio.client import Client
        from temporalio.service import RPCError, RPCStatusCode
        from google.protobuf.duration_pb2 import Duration

        client = await Client.connect(self.address, namespace=self.namespace)

        async def registered() -> bool:  # retried: the services may still be joining
            try:
                await client.workflow_service.register_namespace(RegisterNamespaceRequest(
                    namespace=self.namespace,
                    workflow_execution_retention_period=Duration(seconds=3 * 86400)))
            except RPCError as e:
                if e.status != RPCStatusCode.ALREADY_EXISTS:
                    raise
            return True

        await _until(f"namespace {self.namespace} registered", registered, deadline, self.server)

        async def described() -> bool:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=self.namespace))
            return True

        await _until(f"namespace {self.namespace}", described, deadline, self.server)

        async def attributes() -> bool:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=self.namespace))
            missing = {name: INDEXED_TYPES[kind] for name, kind in self.search_attributes.items()
                       if name not in listed.custom_attributes}
            if missing:
                await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
                    namespace=self.namespace, search_attributes=missing))  # type: ignore[arg-type]
            return True

        await _until("the search attributes", attributes, deadline, self.server)


INDEXED_TYPES = {"Text": 1, "Keyword": 2, "Int": 3, "Double": 4, "Bool": 5, "Datetime": 6, "KeywordList": 7}



async def _until(what: str, check, deadline: float, proc: Proc | None) -> None:  # type: ignore[no-untyped-def]
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check()
        try:
            if await check():
                return
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        await asyncio.sleep(0.2)
    raise ClusterStartError(f"timed out waiting for {what} (last: {last!r})")
