"""PostgreSQL from Debian's packages, on loopback, its data in a directory of its own.

initdb once (a superuser with a generated password, SCRAM on loopback TCP, no Unix socket), then
`postgres` in the foreground under our own process handling. Run as root, it runs as the
`postgres` system user Debian's package creates (PostgreSQL refuses root), so its directory must
be reachable by that user."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from sandbox.cluster.procs import ClusterStartError, Proc, wait_for

HOST = "127.0.0.1"
SUPERUSER = "temporal"
RUN_AS = "postgres"


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, readable by its owner only from the first byte (a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that existed keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)


def bin_dir() -> Path | None:
    """Debian's newest PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin), if any."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise ClusterStartError(f"running as root, PostgreSQL needs the {RUN_AS!r} user "
                                "(apt-get install postgresql creates it)") from None
    return RUN_AS


def _check_reachable(path: Path, user: str) -> None:
    uid = pwd.getpwnam(user).pw_uid
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            raise ClusterStartError(f"PostgreSQL runs as {user!r} here and cannot reach {path}: "
                                    f"{parent} is not searchable by others (chmod o+x {parent})")


class Postgres:
    def __init__(self, root: Path, port: int, log_dir: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.log_dir = log_dir
        self.password_file = root / "password"
        self.user = _run_as()
        self.proc: Proc | None = None
        binaries = bin_dir()
        if binaries is None:
            raise ClusterStartError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = binaries

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def _chown(self, path: Path) -> None:
        if self.user:
            shutil.chown(path, self.user, self.user)

    def init(self) -> None:
        """initdb, unless the data directory already holds a cluster."""
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        if not self.password_file.exists():
            write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(mode=0o700)
        self._chown(self.data)
        if self.user:
            _check_reachable(self.data, self.user)
        pwfile = self.root / ".initdb-pw"
        write_private(pwfile, self.password + "\n")
        self._chown(pwfile)
        try:
            result = subprocess.run(  # noqa: S603 - our own argv
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                 "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8",
                 "--no-instructions"],
                capture_output=True, text=True, timeout=120, user=self.user, group=self.user)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def start(self, deadline: float) -> None:
        self.init()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-h", HOST, "-p", str(self.port),
                "-c", "unix_socket_directories=", "-c", "max_connections=200",
                "-c", "fsync=on", "-c", "log_min_messages=warning"]
        log = self.log_dir / "postgres.log"
        if self.user and log.exists():
            self._chown(log)
        self.proc = Proc("postgres", argv, log, self.root, user=self.user)
        wait_for("PostgreSQL to accept connections", self.ready, deadline, [self.proc])

    def ready(self) -> bool:
        result = subprocess.run(  # noqa: S603
            [str(self.bin / "pg_isready"), "-h", HOST, "-p", str(self.port), "-t", "1"],
            capture_output=True, timeout=10)
        return result.returncode == 0

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM is PostgreSQL's smart shutdown; SIGINT its fast one: used here."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.alive():
            proc.send(signal.SIGINT)  # fast shutdown, a clean checkpoint
            deadline = time.monotonic() + grace
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        proc.stop(grace=1)

    def kill(self) -> None:
        """A crash of the database host: SIGKILL the postmaster and every backend (each is a
        session of its own, so not in its process group; their working directory is the data
        directory), then recovery from the WAL at the next start."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.kill()
        deadline = time.monotonic() + 30
        while (left := self._backends()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)

    def _backends(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if Path(os.readlink(entry / "cwd")) == self.data.resolve():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found
