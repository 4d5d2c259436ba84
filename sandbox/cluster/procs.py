"""Child processes of a real cluster: each in its own process group, its output in a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ClusterStartError(RuntimeError):
    """A component did not come up; the message carries the tail of the log that says why."""


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-64_000:]
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path, user: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - open for the life of the process
        self._log.write(f"$ {' '.join(argv)}\n".encode())
        self._log.flush()
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - our own argv
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the whole group
                user=user, group=user,  # PostgreSQL refuses to run as root
            )
        except OSError:
            self._log.close()
            raise

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        """Raise, with the log's tail, if the process has exited."""
        code = self.popen.poll()
        if code is not None:
            raise ClusterStartError(f"{self.name} exited with status {code}; last lines of {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it; always reaps."""
        try:
            if self.popen.poll() is None:
                self._signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
            # the group may hold children of the process even after it exited
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout=grace)
        finally:
            self._log.close()

    def kill(self) -> None:
        """kill -9 the process group at once (a crash), and reap it."""
        try:
            self._signal(signal.SIGKILL)
            self.popen.wait(timeout=30)
        finally:
            self._log.close()

    def send(self, sig: int) -> None:
        self._signal(sig)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(
    what: str,
    check: Callable[[], T | None],
    deadline: float,
    procs: list[Proc],
    interval: float = 0.2,
) -> T:
    """Poll `check` until it returns something truthy, or fail at `deadline` (time.monotonic()).
    A watched process that exits meanwhile fails the wait at once with its log's tail."""
    last: object = None
    while True:
        for proc in procs:
            proc.check()
        try:
            result = check()
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail(15)}" for p in procs)
            raise ClusterStartError(f"timed out waiting for {what} (last: {last!r})\n{logs}")
        time.sleep(interval)
