"""`kepler dev up --temporal server` as a user runs it: the local stack on the real Temporal
server (PostgreSQL, the Temporal UI), `kepler demo`'s flows through the CLI on it, and
`kepler dev down` stopping all of it, the database included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from kepler.search_attributes import ALL_KEYS
from tests.cli.test_dev_stack import BIN, ROOT, kepler
from tests.helpers import free_port
from tests.realtemporal.conftest import require_temporal_built


@pytest.fixture
def server_home() -> Iterator[dict[str, str]]:
    """kepler.yaml on free ports and a Kepler home PostgreSQL's own user can reach (it runs as
    `postgres` when the tests run as root, and pytest's temporary folders are private)."""
    root = Path(tempfile.mkdtemp(prefix="kepler-dev-server-"))
    root.chmod(0o711)
    text = (ROOT / "kepler.yaml").read_text()
    ports = {p: free_port() for p in (7233, 8233, 7301, 7302, 7303, 7304, 7305, 8480)}
    for old, new in ports.items():
        text = text.replace(f":{old}", f":{new}")
    (root / "kepler.yaml").write_text(text)
    env = {**os.environ, "KEPLER_HOME": str(root / "state"), "KEPLER_CONFIG": str(root / "kepler.yaml"),
           "TEMPORAL_ADDRESS": f"127.0.0.1:{ports[7233]}",
           "CONSOLE_URL": f"http://localhost:{ports[8480]}", "KEPLER_USER": "dev"}
    yield env
    subprocess.run([str(BIN / "kepler"), "dev", "down"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_dev_up_on_the_temporal_server_runs_the_demo_and_down_stops_it(
        server_home: dict[str, str]) -> None:
    require_temporal_built()
    up = kepler(server_home, "dev", "up", "--temporal", "server", "--output", "json")
    assert up.returncode == 0, up.stderr + up.stdout
    state = json.loads(up.stdout)
    assert state["temporal"]["kind"] == "server"
    assert all(state[c]["running"] for c in ("temporal", "sandbox", "worker", "console")), state
    assert "the Temporal server (on PostgreSQL)" in kepler(server_home, "dev", "status").stdout
    assert httpx.get(state["temporal"]["ui"], timeout=10).status_code == 200  # the Temporal UI
    system = subprocess.run([str(BIN / "temporal"), "operator", "cluster", "system", "--address",
                             server_home["TEMPORAL_ADDRESS"], "-o", "json"],
                            capture_output=True, text=True, timeout=60)
    assert json.loads(system.stdout)["serverVersion"].startswith("1.32."), system.stdout + system.stderr

    demo = subprocess.run([str(BIN / "kepler"), "demo"], env=server_home, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-2000:]
    listed = subprocess.run([str(BIN / "temporal"), "workflow", "list", "--address",
                             server_home["TEMPORAL_ADDRESS"], "-o", "json", "--query",
                             'KeplerService="demo-shop"'], capture_output=True, text=True, timeout=60)
    runs = json.loads(listed.stdout)  # SQL visibility, filtered on Kepler's search attributes
    assert {r["type"]["name"] for r in runs} >= {"CreateService", "ReleaseVersion", "Canary"}
    done = {"WORKFLOW_EXECUTION_STATUS_COMPLETED", "WORKFLOW_EXECUTION_STATUS_FAILED",
            "WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW"}
    for r in runs:  # the bad release, the failed migration and the switched-back blue-green
        allowed = done if r["type"]["name"] in ("ReleaseVersion", "Canary") else {
            "WORKFLOW_EXECUTION_STATUS_COMPLETED"}  # end failed (rolled back)
        assert r["status"] in allowed, (r["type"]["name"], r["status"])
    assert sum(r["type"]["name"] == "Canary" and r["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
               for r in runs) == 1  # the blue-green, switched back; the canary was promoted
    assert "rolled_back in" in demo.stdout and "switched back by dev" in demo.stdout
    attrs = subprocess.run([str(BIN / "temporal"), "operator", "search-attribute", "list", "--address",
                            server_home["TEMPORAL_ADDRESS"]], capture_output=True, text=True, timeout=60)
    assert all(key.name in attrs.stdout for key in ALL_KEYS)

    down = kepler(server_home, "dev", "down")
    assert down.returncode == 0 and "temporal" in down.stdout
    after = json.loads(kepler(server_home, "dev", "status", "--output", "json").stdout)
    assert not any(item["running"] for item in after.values())
    data = Path(server_home["KEPLER_HOME"]) / "temporal-server" / "postgres" / "data"
    assert not (data / "postmaster.pid").exists()  # PostgreSQL shut down cleanly
    assert processes_under(Path(server_home["KEPLER_HOME"])) == []  # server, UI, backends: none left


def processes_under(home: Path) -> list[str]:
    """Command lines of the running processes that name a path in `home`, or run in it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(home) in cmdline or cwd.startswith(str(home)):
            found.append(cmdline)
    return found
