"""`kepler dev up | status | down` as a user runs them, on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kepler.search_attributes import ALL_KEYS
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def dev_home(tmp_path: Path) -> dict[str, str]:
    text = (ROOT / "kepler.yaml").read_text()
    ports = {p: free_port() for p in (7233, 8233, 7301, 7302, 7303, 7304, 7305, 8480)}
    for old, new in ports.items():
        text = text.replace(f":{old}", f":{new}")
    (tmp_path / "kepler.yaml").write_text(text)
    env = {**os.environ, "KEPLER_HOME": str(tmp_path / "state"),
           "KEPLER_CONFIG": str(tmp_path / "kepler.yaml"),
           "TEMPORAL_ADDRESS": f"127.0.0.1:{ports[7233]}",
           "CONSOLE_URL": f"http://localhost:{ports[8480]}"}
    yield env
    subprocess.run([str(BIN / "kepler"), "dev", "down"], env=env, capture_output=True, timeout=60)


def kepler(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kepler"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_dev_up_is_idempotent_lists_urls_and_down_stops_it(dev_home: dict[str, str]) -> None:
    first = kepler(dev_home, "dev", "up", "--output", "json")
    assert first.returncode == 0, first.stderr
    state = json.loads(first.stdout)
    assert all(state[c]["running"] for c in ("temporal", "sandbox", "worker", "console")), state
    assert state["temporal"]["ui"].startswith("http://127.0.0.1:")
    assert state["temporal"]["address"] == dev_home["TEMPORAL_ADDRESS"]
    assert state["console"]["url"] == dev_home["CONSOLE_URL"]  # console.url of kepler.yaml
    login = httpx.get(f"{state['console']['url']}/login", timeout=10)
    assert login.status_code == 200 and "default-src 'none'" in login.headers["content-security-policy"]

    attrs = subprocess.run([str(BIN / "temporal"), "operator", "search-attribute", "list",
                            "--address", dev_home["TEMPORAL_ADDRESS"]],
                           capture_output=True, text=True, timeout=60)
    for key in ALL_KEYS:
        assert key.name in attrs.stdout

    again = json.loads(kepler(dev_home, "dev", "up", "--output", "json").stdout)
    assert {c: again[c]["pid"] for c in again} == {c: state[c]["pid"] for c in state}

    status = json.loads(kepler(dev_home, "dev", "status", "--output", "json").stdout)
    assert status["sandbox"]["urls"] == state["sandbox"]["urls"]
    text = kepler(dev_home, "dev", "status").stdout
    assert f"URL      {dev_home['CONSOLE_URL']}" in text

    down = kepler(dev_home, "dev", "down")
    assert down.returncode == 0
    after = json.loads(kepler(dev_home, "dev", "status", "--output", "json").stdout)
    assert not any(after[c]["running"] for c in after)
    for c in state:
        pid = state[c]["pid"]
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
