"""A real `kepler worker` subprocess that tests can kill -9, SIGTERM and restart, and an
in-process worker on a platform file of a test's own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import yaml

BIN = Path(sys.executable).parent


class WorkerProcess:
    def __init__(self, platform_file: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.platform_file = platform_file
        self.log = log
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60) -> "WorkerProcess":
        offset = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN / "kepler"), "worker", stdout=out, stderr=out, start_new_session=True,
            env={**os.environ, "KEPLER_CONFIG": str(self.platform_file), **self.env})
        out.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while "worker polling" not in self.log.read_bytes()[offset:].decode(errors="replace"):
            if self.proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)

    async def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                await self.terminate(15)
            except asyncio.TimeoutError:
                self.kill9()
                await self.proc.wait()


async def wait_for(check, timeout: float = 60, what: str = "condition", interval: float = 0.02):  # noqa: ANN001, ANN201
    """Await `check()` (sync or async) until truthy, or fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@asynccontextmanager
async def worker_with(sandbox: Any, dev_env: Any, directory: Path, queue: str,
                      change: Callable[[dict[str, Any]], None]) -> AsyncIterator[Path]:
    """The real worker (in this process) on the test platform file as `change` edits it,
    on its own task queue; yields that file, for the CLI."""
    from kepler.settings import Secrets, load_platform
    from tests.conftest import platform_yaml
    from worker import build_worker

    config = yaml.safe_load(platform_yaml(sandbox.urls, dev_env.client.service_client.config.target_host,
                                          queue))
    change(config)
    path = directory / "kepler.yaml"
    path.write_text(yaml.safe_dump(config))
    with ThreadPoolExecutor(max_workers=32) as executor:
        async with build_worker(dev_env.client, load_platform(path), Secrets(), executor):
            yield path
