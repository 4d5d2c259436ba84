"""What the simulated kubelet knows about an image: whether it can be pulled, and its
labels (which make the sandbox's pods crash, fail requests or answer slowly).

Reads the registry the image reference names over plain http (Distribution API:
manifest, then config blob) and caches labels per digest. Lookups never block the
controller: an unknown image is `pending` until a background fetch answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from sandbox.http_client import shared_client

CRASH_LABEL = "io.kepler.sandbox.crash"
UNREADY_LABEL = "io.kepler.sandbox.unready"
ERROR_RATE_LABEL = "io.kepler.sandbox.error-rate"
LATENCY_LABEL = "io.kepler.sandbox.latency-ms"
HOOK_LABEL_PREFIX = "io.kepler.sandbox.hook."  # + the hook kind: ok | fail
POD_HOOK_LABEL = "kepler.dev/hook"  # what a release hook's pod says it runs (Kepler's label)

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
RECHECK_MISSING_S = 1.0  # the kubelet's pull back-off, shortened
RECHECK_TAG_S = 5.0  # a tag may move; a digest never does
LOOKUPS_AT_ONCE = 8  # a kubelet pulls a few images at a time (and the pool stays small)


@dataclass
class ImageInfo:
    state: str  # pending | ok | missing
    labels: dict[str, str] = field(default_factory=dict)
    digest: str | None = None
    message: str = ""
    checked: float = 0.0

    @property
    def crashes(self) -> bool:
        return self.labels.get(CRASH_LABEL, "").lower() == "true"

    @property
    def unready(self) -> bool:
        return self.labels.get(UNREADY_LABEL, "").lower() == "true"


def failing_hook(pod: dict[str, Any], labels: dict[str, str]) -> str | None:
    """The release hook a Job's pod runs, when its image's labels say that hook fails."""
    hook = ((pod.get("metadata") or {}).get("labels") or {}).get(POD_HOOK_LABEL)
    return hook if hook and labels.get(HOOK_LABEL_PREFIX + hook, "").lower() == "fail" else None


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    reference: str  # tag or digest

    @property
    def by_digest(self) -> bool:
        return self.reference.startswith("sha256:")


def parse_image(image: str) -> ImageRef:
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name if "/" in name else f"library/{name}"
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    return ImageRef(registry, path, digest or tag)


def behaviour(labels: dict[str, str]) -> tuple[float, float]:
    """(error rate 0..1, typical latency in ms) a version's image labels ask for."""
    try:
        error_rate = min(1.0, max(0.0, float(labels.get(ERROR_RATE_LABEL, "0"))))
    except ValueError:
        error_rate = 0.0
    try:
        latency = max(0.1, float(labels.get(LATENCY_LABEL, "40")))
    except ValueError:
        latency = 40.0
    return error_rate, latency


class ImageResolver:
    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self.by_ref: dict[str, ImageInfo] = {}
        self.labels_by_digest: dict[str, dict[str, str]] = {}
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_resolved: Callable[[], None] = lambda: None  # a lookup came back
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}  # one a loop

    def lookup(self, image: str) -> ImageInfo:
        """What is known of `image` now; a lookup starts (in the background) when it is
        unknown or stale. Needs the running loop."""
        info = self.by_ref.get(image)
        now = time.monotonic()
        stale = info is None or (
            info.state in ("missing", "pending") and now - info.checked > RECHECK_MISSING_S) or (
            info.state == "ok" and not parse_image(image).by_digest
            and now - info.checked > RECHECK_TAG_S)
        if stale and image not in self._inflight:
            self._inflight.add(image)
            task = asyncio.get_running_loop().create_task(self._refresh(image))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return info or ImageInfo("pending")

    async def aclose(self) -> None:
        """Cancel the lookups in flight (the sandbox is stopping)."""
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh(self, image: str) -> None:
        gate = self._gates.setdefault(asyncio.get_running_loop(),
                                      asyncio.Semaphore(LOOKUPS_AT_ONCE))
        try:
            async with gate:
                self.by_ref[image] = await self.fetch(image)
        finally:
            self._inflight.discard(image)
        self.on_resolved()

    async def fetch(self, image: str) -> ImageInfo:
        ref = parse_image(image)
        base = f"http://{ref.registry}/v2/{ref.repository}"
        client = shared_client()
        try:
            manifest, digest = await self._manifest(client, base, ref.reference)
            if manifest is None:
                return ImageInfo("missing", message=f'pull access denied or manifest '
                                 f'unknown for "{image}"', checked=time.monotonic())
            if digest in self.labels_by_digest:
                return ImageInfo("ok", self.labels_by_digest[digest], digest,
                                 checked=time.monotonic())
            labels = await self._labels(client, base, manifest)
        except httpx.TimeoutException as e:  # a slow registry (or a busy sandbox): still
            return ImageInfo("pending", message=f"pulling image {image!r}: {e!r}",  # pulling
                             checked=time.monotonic())
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            return ImageInfo("missing", message=f'failed to pull image "{image}": {e}',
                             checked=time.monotonic())
        if labels is None:
            return ImageInfo("missing", message=f'failed to pull image "{image}": config '
                             "blob unknown", checked=time.monotonic())
        self.labels_by_digest[digest] = labels
        return ImageInfo("ok", labels, digest, checked=time.monotonic())

    async def _manifest(self, client: httpx.AsyncClient, base: str,
                        reference: str) -> tuple[dict[str, Any] | None, str]:
        r = await client.get(f"{base}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES},
                             timeout=self.timeout)
        if r.status_code != 200:
            return None, ""
        digest = r.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(r.content).hexdigest())
        manifest = json.loads(r.content)
        media = manifest.get("mediaType") or r.headers.get("content-type", "")
        if media.split(";")[0] in INDEX_TYPES:
            entries = manifest.get("manifests") or []
            chosen = next((m for m in entries if (m.get("platform") or {}).get(
                "architecture") == "amd64"), entries[0] if entries else None)
            if chosen is None:
                return None, ""
            inner, _ = await self._manifest(client, base, chosen["digest"])
            return inner, digest
        return manifest, digest

    async def _labels(self, client: httpx.AsyncClient, base: str,
                      manifest: dict[str, Any]) -> dict[str, str] | None:
        config_digest = manifest["config"]["digest"]
        r = await client.get(f"{base}/blobs/{config_digest}", follow_redirects=True,
                             timeout=self.timeout)
        if r.status_code != 200:
            return None
        config = json.loads(r.content)
        return {str(k): str(v) for k, v in ((config.get("config") or {}).get("Labels")
                                            or {}).items()}
