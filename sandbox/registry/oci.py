"""OCI image pieces shared by the registry and Jenkins stand-ins.

Digests, repository/tag/digest grammar (from the distribution reference
package), deterministic tiny images (the same files and labels give the same
digest), and a push over the Distribution API that works against any
registry speaking it, including Debian's real `docker-registry`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)

# Label keys the Kubernetes stand-in reads to decide how a version behaves.
LABEL_CRASH = "io.kepler.sandbox.crash"
LABEL_ERROR_RATE = "io.kepler.sandbox.error-rate"
LABEL_LATENCY_MS = "io.kepler.sandbox.latency-ms"
LABEL_BUILD_FAIL = "io.kepler.sandbox.build-fail"
LABEL_UNREADY = "io.kepler.sandbox.unready"  # runs, never passes its readiness probe
# + pre_deploy | post_deploy | undo: "fail" makes a release hook's Job of that kind fail
LABEL_HOOK_PREFIX = "io.kepler.sandbox.hook."
HOOK_KINDS = ("pre_deploy", "post_deploy", "undo")
LABEL_REVISION = "org.opencontainers.image.revision"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def valid_repository(name: str) -> bool:
    return len(name) <= 255 and bool(REPOSITORY_RE.match(name))


def valid_digest(value: str) -> bool:
    """A digest the registry can verify (only sha256 is produced or accepted)."""
    return bool(SHA256_RE.match(value))


@dataclass(frozen=True)
class ImageRef:
    host: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"{self.host}/{self.repository}{tail}"


def parse_image_ref(text: str) -> ImageRef:
    """`host[:port]/repo[:tag][@digest]`; the host part is required (no Docker Hub)."""
    rest, _, digest = text.partition("@")
    host, slash, path = rest.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"image {text!r} must name a registry host, e.g. 127.0.0.1:5000/team/app:tag")
    repo, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = path.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise ValueError(f"image {text!r}: invalid tag {tag!r}")
    if not valid_repository(repo):
        raise ValueError(f"image {text!r}: invalid repository name {repo!r}")
    if digest and not valid_digest(digest):
        raise ValueError(f"image {text!r}: invalid digest {digest!r}")
    return ImageRef(host, repo, tag, digest or None)


@dataclass(frozen=True)
class Image:
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def _tar_files(files: dict[str, bytes], prefix: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(f"{prefix}/{path}")
            info.size = len(files[path])
            info.mode = 0o644
            info.mtime = 0  # reproducible: same files, same digest
            tar.addfile(info, io.BytesIO(files[path]))
    return buf.getvalue()


def build_image(files: dict[str, bytes], labels: dict[str, str], *, created: str,
                cmd: list[str] | None = None, exposed_ports: list[str] | None = None,
                workdir: str = "/app") -> Image:
    """One-layer OCI image holding `files` under `workdir`, with `labels` in its config."""
    raw_layer = _tar_files(files, workdir.strip("/") or "app")
    layer = gzip.compress(raw_layer, mtime=0)
    config_doc = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": dict(sorted(labels.items())),
            "WorkingDir": workdir,
            "Cmd": cmd or [],
            "ExposedPorts": {p: {} for p in exposed_ports or []},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw_layer)]},
        "history": [{"created": created, "created_by": "kepler sandbox build"}],
    }
    config = json.dumps(config_doc, sort_keys=True, separators=(",", ":")).encode()
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
        "annotations": {LABEL_REVISION: labels.get(LABEL_REVISION, "")},
    }
    manifest = json.dumps(manifest_doc, sort_keys=True, separators=(",", ":")).encode()
    return Image(config=config, layer=layer, manifest=manifest)


class PushError(Exception):
    """The registry refused a step of the push; the message names the step and its answer."""


def _registry_error(step: str, response: httpx.Response) -> PushError:
    detail = response.text.strip()[:300]
    return PushError(f"{step}: registry answered {response.status_code} {detail}")


async def push_blob(client: httpx.AsyncClient, repository: str, data: bytes) -> str:
    """Upload a blob unless the registry already has it; returns its digest."""
    digest = sha256_digest(data)
    head = await client.head(f"/v2/{repository}/blobs/{digest}")
    if head.status_code == 200:
        return digest
    start = await client.post(f"/v2/{repository}/blobs/uploads/")
    if start.status_code != 202:
        raise _registry_error(f"start upload of {digest}", start)
    location = start.headers["location"]
    separator = "&" if "?" in location else "?"
    done = await client.put(f"{location}{separator}digest={digest}", content=data,
                            headers={"content-type": "application/octet-stream"})
    if done.status_code != 201:
        raise _registry_error(f"upload {digest}", done)
    return digest


async def push_image(registry_url: str, repository: str, reference: str, image: Image,
                     timeout: float = 30.0) -> str:
    """Push config, layer and manifest; returns the manifest digest the registry reports."""
    async with httpx.AsyncClient(base_url=registry_url, timeout=timeout) as client:
        await push_blob(client, repository, image.config)
        await push_blob(client, repository, image.layer)
        put = await client.put(f"/v2/{repository}/manifests/{reference}", content=image.manifest,
                               headers={"content-type": OCI_MANIFEST})
        if put.status_code != 201:
            raise _registry_error(f"put manifest {repository}:{reference}", put)
        return put.headers.get("docker-content-digest", image.digest)
