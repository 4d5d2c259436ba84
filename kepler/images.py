"""Image references, parsed (never concatenated) per the distribution reference grammar."""

from __future__ import annotations

import re

from pydantic import BaseModel, model_validator

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
_REFERENCE = re.compile(
    rf"^(?:(?P<registry>{_DOMAIN})/)?(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
DIGEST_RE = re.compile(rf"^{_DIGEST}$")


class ImageRef(BaseModel, frozen=True):
    registry: str | None = None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "ImageRef":
        if not self.tag and not self.digest:
            raise ValueError("an image reference needs a tag or a digest")
        return self

    @classmethod
    def parse(cls, text: str) -> "ImageRef":
        m = _REFERENCE.fullmatch(text)
        if not m or len(text) > 512:
            raise ValueError(f"is not a valid image reference (got {text[:100]!r})")
        registry = m["registry"]
        repository = m["repository"]
        # "library/nginx" has no registry; a first part with '.', ':' or 'localhost' is one.
        if registry and not ("." in registry or ":" in registry or registry == "localhost"):
            repository = f"{registry}/{repository}"
            registry = None
        return cls(registry=registry, repository=repository, tag=m["tag"], digest=m["digest"])

    def with_digest(self, digest: str) -> "ImageRef":
        if not DIGEST_RE.fullmatch(digest):
            raise ValueError(f"is not a sha256 digest (got {digest[:80]!r})")
        return ImageRef(registry=self.registry, repository=self.repository, tag=None, digest=digest)

    @property
    def reference(self) -> str:
        """What the registry API calls the reference: the digest if pinned, else the tag."""
        return self.digest or self.tag or ""

    def __str__(self) -> str:
        name = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            name += f":{self.tag}"
        if self.digest:
            name += f"@{self.digest}"
        return name
