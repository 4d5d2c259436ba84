"""Small test helpers: free ports, waiting on conditions, real components."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
import shutil
import random
import socket
import time
from typing import Any, Callable, Iterator, TypeVar

import pytest

T = TypeVar("T")


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range (from 32768): a port
    handed out by bind(0) can be taken meanwhile as the source port of any outgoing
    connection (a control plane starting makes many) before its server binds it."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


def wait_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        else:
            if result:
                return result
            last = result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def eventually(check: Callable[[], T], what: str, timeout: float = 120.0) -> T:
    """wait_until for a real cluster's asynchronous controllers (a longer deadline: kwok's
    crash-loop back-offs took over 60 s on the 2-core machine under the whole suite)."""
    return wait_until(check, timeout=timeout, interval=0.1, what=what)


def require_binary(name: str, *candidates: str) -> str:
    """Path of a real component; skip without it, except in CI (KEPLER_REQUIRE_REAL=1)."""
    for cand in (name, *candidates):
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if path:
            return path
    reason = f"{name} is not installed (apt-get install {name})"
    if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
        pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
    pytest.skip(reason=reason)


def sandbox_fixture(name: str, **settings: Any) -> Any:
    """A module-scoped fixture running its own sandbox, e.g. with slow rollouts:
    `slow_box = sandbox_fixture("crash", seconds_per_replica=1.5)`."""
    from sandbox.serve import Sandbox
    from sandbox.world import SandboxSettings

    @pytest.fixture(scope="module")
    def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
        sandbox = Sandbox(SandboxSettings(state_dir=tmp_path_factory.mktemp(name), **settings)).start()
        yield sandbox
        sandbox.stop()

    return box


@contextmanager
def _real_server(args: list[str], home: Path, what: str) -> Iterator[str]:
    """A real component started with `args` (its own flags for port 127.0.0.1:<port>
    substituted for `{port}`), its log in home/log; its URL once /-/ready answers 200."""
    import subprocess

    import httpx

    port = free_port()
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in args],
                            stdout=subprocess.DEVNULL, stderr=(home / "log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
                   timeout=30, what=f"{what} ready (log: {home / 'log'})")
        yield url
    finally:
        stop_process(proc)


def stop_process(proc: "subprocess.Popen[bytes]", grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def real_prometheus(scrape_target: str, home: Path, rule_files: tuple[Path, ...] = (),
                    alertmanager: str | None = None) -> Iterator[str]:
    """Debian's prometheus on a free port, scraping `host:port` every second, evaluating
    `rule_files` every second and sending their alerts to `alertmanager` (a URL); its URL."""
    import yaml

    binary = require_binary("prometheus")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "sandbox", "static_configs": [
            {"targets": [scrape_target]}]}]}
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.removeprefix("http://")]}]}]}
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    with _real_server([binary, f"--config.file={home / 'prometheus.yml'}",
                       f"--storage.tsdb.path={home / 'data'}",
                       "--web.listen-address=127.0.0.1:{port}"], home, "prometheus") as url:
        yield url


@contextmanager
def real_alertmanager(config: dict[str, Any], home: Path) -> Iterator[str]:
    """Debian's prometheus-alertmanager with `config` on a free loopback port, clustering
    off, its state in `home`; its URL."""
    import yaml

    binary = require_binary("prometheus-alertmanager", "alertmanager")
    (home / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    with _real_server([binary, f"--config.file={home / 'alertmanager.yml'}",
                       f"--storage.path={home / 'data'}", "--cluster.listen-address=",
                       "--web.listen-address=127.0.0.1:{port}"], home, "alertmanager") as url:
        yield url


HISTORIES = Path(__file__).parent / "histories"


async def keep_history(client: Any, name: str, workflow_id: str, run_id: str | None = None) -> None:
    """Replay material (tests/workflows/test_replay.py replays every file in tests/histories/): with
    KEPLER_RECORD_HISTORIES=1, write this run's history to tests/histories/<name>.json."""
    if os.environ.get("KEPLER_RECORD_HISTORIES") == "1":
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def signed(req: T, at: Any = None) -> T:
    """`req` signed by its requester with the session's sandbox keys (tests/conftest.py),
    at `at` (the time-skipping server's time, which runs ahead of the wall clock) or now."""
    from kepler.settings import load_platform
    from starter.signing import sign_request

    return sign_request(load_platform(), req, at=at)


async def decide(client: Any, service: str, env: str, approver: str, verdict: str = "approve",
                 comment: str = "", **options: Any) -> str:
    """Approve or reject what is pending, signed by `approver` with the sandbox keys, as
    `kepler approve` does."""
    from kepler.settings import load_platform
    from starter import signing

    return await signing.decide(client, load_platform(), service, env, verdict, approver, comment,
                                **options)
