"""The Docker registry, over the Distribution API v2 (httpx): does an image exist,
and what is its digest."""

from __future__ import annotations

import httpx
from temporalio import activity

from activities.errors import raise_for_status, retryable
from activities.http_clients import shared_httpx
from kepler.images import DIGEST_RE
from kepler.settings import Platform, Secrets
from kepler.payloads import ImageQuery

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class RegistryActivities:
    def __init__(self, platform: Platform, secrets: Secrets) -> None:
        self.config = platform.registry
        self._password = secrets.registry_password

    def _auth(self) -> httpx.BasicAuth | None:
        if self.config.username and self._password:
            return httpx.BasicAuth(self.config.username, self._password.get_secret_value())
        return None

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest of repository:reference, or None when it does not exist."""
        what = f"registry {repository}:{reference}"
        try:
            response = shared_httpx().head(
                f"{self.config.url.rstrip('/')}/v2/{repository}/manifests/{reference}",
                headers={"Accept": MANIFEST_TYPES}, auth=self._auth(), timeout=15)
        except httpx.TransportError as e:
            raise retryable(f"{what}: registry unreachable: {type(e).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise_for_status(response.status_code, what)
        digest = response.headers.get("Docker-Content-Digest", "")
        if not DIGEST_RE.fullmatch(digest):
            raise retryable(f"{what}: registry answered without a valid Docker-Content-Digest")
        return digest

    @activity.defn(name="registry.find_image")
    def find_image(self, query: ImageQuery) -> str:
        """`host/repository@sha256:...` if the image exists, else an empty string."""
        digest = self.manifest_digest(query.repository, query.reference)
        return f"{self.config.host}/{query.repository}@{digest}" if digest else ""
