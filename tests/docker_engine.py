"""A real Docker engine for tests: Debian's docker.io `dockerd`, started as root with all
its state in a temporary folder, no bridge and no iptables, and a base image imported
from Debian's busybox-static (nothing is pulled from a hub)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import pytest

from tests.helpers import require_binary, wait_until

BASE_IMAGE = "kepler-base:busybox"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "mkdir", "sleep", "true", "false", "env")


@dataclass
class Engine:
    host: str  # unix:///.../docker.sock
    root: Path
    process: subprocess.Popen[bytes]

    def api(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.host, timeout=120)

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")[-4000:]


def busybox_rootfs() -> bytes:
    """A tar of /bin/busybox (Debian's static build) and its applet symlinks."""
    busybox = require_binary("busybox", "/bin/busybox", "/usr/bin/busybox")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def start_engine(insecure_registries: tuple[str, ...] = ("127.0.0.0/8",)) -> Engine:
    dockerd = require_binary("dockerd", "/usr/sbin/dockerd")
    if os.geteuid() != 0:
        reason = "dockerd needs root to run containers for RUN steps"
        if os.environ.get("KEPLER_REQUIRE_REAL") == "1":
            pytest.fail(f"KEPLER_REQUIRE_REAL=1 but {reason}")
        pytest.skip(reason=reason)
    root = Path(tempfile.mkdtemp(prefix="kd", dir="/tmp"))  # short: unix socket paths are limited
    host = f"unix://{root}/docker.sock"
    args = [dockerd, "--host", host, "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--log-level=warn"]
    args += [f"--insecure-registry={r}" for r in insecure_registries]
    log = open(root / "dockerd.log", "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    engine = Engine(host, root, process)
    try:
        wait_until(lambda: process.poll() is None and engine.api().ping(), timeout=30,
                   what="dockerd to answer /_ping")
    except AssertionError as e:
        stop_engine(engine)
        raise AssertionError(f"{e}\n{engine.log()}") from None
    engine.api().import_image_from_data(busybox_rootfs(), repository=BASE_IMAGE.split(":")[0],
                                        tag=BASE_IMAGE.split(":")[1])
    return engine


def stop_engine(engine: Engine) -> None:
    if engine.process.poll() is None:
        engine.process.terminate()
        try:
            engine.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait(timeout=10)
    subprocess.run(["umount", "-R", str(engine.root / "data")], capture_output=True)
    shutil.rmtree(engine.root, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = start_engine()
    try:
        yield e
    finally:
        stop_engine(e)
