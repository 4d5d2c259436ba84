"""`kepler dev up` on a dev server an older Kepler started: the search attributes added
since (the DORA metrics') are registered with their types, once."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from kepler.search_attributes import ALL_KEYS, type_name
from starter.dev import _register_search_attributes
from tests.helpers import free_port, wait_until

BIN = Path(sys.executable).parent


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_attributes_missing_on_a_running_dev_server_are_registered(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
         "--headless", "--log-level", "error", "--search-attribute", "KeplerService=Keyword"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("w"), start_new_session=True)
    try:
        wait_until(lambda: _listening(port), timeout=60, what="the dev server")
        platform = SimpleNamespace(temporal=SimpleNamespace(address=f"127.0.0.1:{port}",
                                                            namespace="default"))
        for _ in range(2):  # the second time finds nothing to do
            _register_search_attributes(platform)  # type: ignore[arg-type]
        listed = subprocess.run([str(BIN / "temporal"), "operator", "search-attribute", "list",
                                 "--address", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
        registered = {line.split()[0]: line.split()[1] for line in listed.splitlines()
                      if line.strip().startswith("Kepler")}
        assert registered == {k.name: type_name(k) for k in ALL_KEYS}
    finally:
        server.terminate()
        server.wait(timeout=30)
