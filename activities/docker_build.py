"""The local Docker builder (`builder: docker` in kepler.yaml), through the `docker` SDK.

Fetches the commit's archive from GitLab (python-gitlab), builds it with the Docker
engine the worker can reach (DOCKER_HOST or `docker.host`), streams the build log as
heartbeat details, pushes to the registry and returns the pushed digest. A failed build
fails at once (non-retryable `BuildFailed`) with the tail of its log.
"""

from __future__ import annotations

import collections
import contextlib
import io
import tarfile
import time
from typing import Any, Iterable, Iterator

import docker
import docker.errors
import gitlab
import requests
from docker.utils import parse_repository_tag
from temporalio import activity

from activities.errors import non_retryable, raise_for_status, retryable
from activities.gitlab import gitlab_errors
from kepler.settings import Platform, Secrets
from kepler.payloads import BuildRequest, BuildResult

LOG_TAIL_LINES = 30
MAX_CONTEXT_BYTES = 512 * 1024 * 1024


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.APIError as e:
        raise_for_status(e.status_code, what, str(e.explanation or e))
    except docker.errors.DockerException as e:  # no engine configured or reachable
        raise retryable(f"{what}: Docker engine unavailable: {e}") from None
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as e:
        raise retryable(f"{what}: Docker engine unreachable: {type(e).__name__}") from None


def build_context(archive: bytes) -> io.BytesIO:
    """GitLab's archive has one top-level folder (`<project>-<sha>-<sha>/`); the build
    context is its content. Only regular files, folders and in-tree symlinks are kept."""
    out = io.BytesIO()
    total = 0
    names: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as src, \
            tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or member.name.startswith("/") or ".." in parts[1].split("/"):
                continue
            if not (member.isfile() or member.isdir() or member.issym()):
                continue
            if member.issym() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
                continue
            total += member.size
            if total > MAX_CONTEXT_BYTES:
                raise non_retryable("InvalidInput", "the repository archive is larger than "
                                    f"{MAX_CONTEXT_BYTES >> 20} MiB")
            names.add(parts[1].rstrip("/"))
            member.name = parts[1]
            member.pax_headers = {k: v for k, v in member.pax_headers.items()
                                  if k not in ("path", "linkpath")}  # long names live here
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    if "Dockerfile" not in names:
        raise non_retryable("InvalidInput", "the commit has no Dockerfile at the repository root")
    out.seek(0)
    return out


class BuildLog:
    """The last lines of a build's log, and a heartbeat with them."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.step = ""

    def add(self, text: str) -> None:
        for line in text.splitlines():
            line = line.rstrip()
            if line:
                self.lines.append(line)
                if line.startswith("Step "):
                    self.step = line

    def tail(self) -> str:
        return "\n".join(self.lines)

    def heartbeat(self, phase: str, **extra: Any) -> None:
        activity.heartbeat({"phase": phase, "step": self.step, "log": list(self.lines)[-5:],
                            **extra})


class DockerBuildActivities:
    def __init__(self, platform: Platform, secrets: Secrets) -> None:
        self.platform = platform
        self.config = platform.docker
        self._gitlab_token = secrets.gitlab_token
        self._registry_password = secrets.registry_password

    def engine(self) -> docker.APIClient:
        if self.config.host:
            return docker.APIClient(base_url=self.config.host, timeout=self.config.timeout_s)
        return docker.APIClient(timeout=self.config.timeout_s, **docker.utils.kwargs_from_env())

    def archive(self, service: str, commit: str) -> bytes:
        path = f"{self.platform.gitlab.group}/{service}"
        gl = gitlab.Gitlab(self.platform.gitlab.url, timeout=60, keep_base_url=True,
                           private_token=self._gitlab_token.get_secret_value())
        with gitlab_errors(f"archive of {path} at {commit[:12]}"):
            return gl.projects.get(path).repository_archive(sha=commit, format="tar")

    def _auth(self) -> dict[str, str] | None:
        user = self.platform.registry.username
        if user and self._registry_password:
            return {"username": user, "password": self._registry_password.get_secret_value()}
        return None

    @activity.defn(name="docker.build")
    def build(self, req: BuildRequest) -> BuildResult:
        """Build `req.commit` and push it as `req.image`. A retry after the push returns the
        digest it recorded; a retry before it rebuilds (the engine's layer cache makes that
        cheap)."""
        details = activity.info().heartbeat_details
        done = dict(details[0]) if details else {}
        if done.get("phase") == "pushed" and done.get("digest"):
            return BuildResult(number=0, result="SUCCESS", digest=done["digest"])
        started = time.monotonic()
        log = BuildLog()
        log.heartbeat("fetching source")
        context = build_context(self.archive(req.service, req.commit))
        api = self.engine()
        with docker_errors(f"build {req.image}"):
            stream = api.build(fileobj=context, custom_context=True, tag=req.image, rm=True,
                               forcerm=True, pull=False, decode=True,
                               network_mode=self.config.network_mode,
                               labels={"io.kepler.commit": req.commit,
                                       "io.kepler.service": req.service})
            self._follow_build(stream, log, req)
        repository, tag = parse_repository_tag(req.image)
        with docker_errors(f"push {req.image}"):
            digest = self._push(api.push(repository, tag=tag, stream=True, decode=True,
                                         auth_config=self._auth()), log, req.image)
        activity.heartbeat({"phase": "pushed", "digest": digest})
        return BuildResult(number=0, result="SUCCESS", digest=digest, log_tail=log.tail(),
                           duration_ms=int((time.monotonic() - started) * 1000))

    @staticmethod
    def _follow_build(stream: Iterable[dict[str, Any]], log: BuildLog, req: BuildRequest) -> None:
        for chunk in stream:
            if "stream" in chunk:
                log.add(chunk["stream"])
                log.heartbeat("building")
            if "error" in chunk:
                log.add(chunk["error"])
                raise non_retryable("BuildFailed", f"docker build of {req.service} at "
                                    f"{req.commit[:12]} failed; log tail:\n{log.tail()}")

    @staticmethod
    def _push(stream: Iterable[dict[str, Any]], log: BuildLog, image: str) -> str:
        digest = ""
        for chunk in stream:
            if "error" in chunk:
                raise retryable(f"push {image}: {chunk['error'][:300]}")
            if chunk.get("aux", {}).get("Digest"):
                digest = chunk["aux"]["Digest"]
            if chunk.get("status") and not chunk.get("progressDetail"):
                log.add(f"push: {chunk['status']}")
            log.heartbeat("pushing")
        if not digest:
            raise retryable(f"push {image}: the engine did not report a digest")
        return digest
