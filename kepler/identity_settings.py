"""kepler.yaml's `identity` (who is who) and `console` (where passkeys sign) sections, and
reading the platform's signers: SSH keys from the allowed-signers file, passkeys from the
passkeys file, each passkey kept only while its enrolment verifies (kepler/enrolment.py)."""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from kepler.models import Model
from kepler.validation import Duration, UserName

if TYPE_CHECKING:
    from kepler.identity import AllowedSigners, RelyingParty


class ConfigError(Exception):
    """kepler.yaml is missing, unreadable or invalid; the message names where and why."""


def kepler_home() -> Path:
    """Where the local stack keeps its state, and the sandbox its people's keys."""
    return Path(os.environ.get("KEPLER_HOME", ".kepler")).absolute()


def home_secret(name: str, size: int = 32) -> bytes:
    """A random key kept in the Kepler home (keys/NAME, made once, mode 0600): what one
    machine's processes share when no secret is configured."""
    path = kepler_home() / "keys" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(size))
    return path.read_text().strip().encode()


class ConsoleConfig(Model):
    """The Kepler console (`kepler console`): where people read and approve in a browser."""
    url: str | None = Field(None, max_length=300, description=(
        "the console's address as browsers reach it, e.g. https://kepler.example.com: its "
        "host is the passkeys' relying party; unset, no passkey verifies"))
    listen: str = Field("127.0.0.1:8480", pattern=r"^[0-9a-zA-Z.:\[\]-]{1,100}:[0-9]{1,5}$",
                        description="HOST:PORT the console serves on")
    trusted_header: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$", description=(
        "a header an SSO proxy in front of the console sets to the signed-in user: it lets "
        "them read, never approve (only a passkey does); unset, nobody is trusted by header"))
    session: Duration = Field(timedelta(hours=8), ge=timedelta(minutes=5), le=timedelta(hours=24),
                              description="how long a sign-in lasts")
    refresh: Duration = Field(timedelta(seconds=2), ge=timedelta(seconds=1),
                              le=timedelta(minutes=1), description=(
        "how often an open page checks for changes (server-sent events)"))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("must be http(s)://HOST[:PORT] with no path")
        if parts.scheme == "http" and parts.hostname != "localhost":
            raise ValueError("browsers use passkeys over https only (http: localhost only)")
        return value.rstrip("/")

    def relying_party(self) -> "RelyingParty | None":
        from kepler.identity import RelyingParty

        if self.url is None:
            return None
        parts = urlsplit(self.url)
        return RelyingParty(rp_id=parts.hostname or "", origins=[f"{parts.scheme}://{parts.netloc}"])


class IdentityConfig(Model):
    """Who is who (kepler/identity.py). Relative paths are inside the Kepler home
    (KEPLER_HOME, default .kepler)."""
    allowed_signers: str | None = Field(None, description=(
        "ssh-keygen allowed-signers file naming every key and what it may sign (platform-owned)"))
    passkeys: str | None = Field(None, description=(
        "the console's enrolled passkeys (JSON lines, each proven by its person's SSH key; "
        "platform-owned, next to the allowed signers)"))
    sandbox_keys: str | None = Field(None, description=(
        "the sandbox only: a folder of keys, one per person; --as NAME signs with NAME's"))
    admins: list[UserName] = Field(default_factory=list, description=(
        "may create a service over an existing one they do not own"))
    request_valid_for: Duration = Field(timedelta(minutes=15), ge=timedelta(minutes=1),
                                        le=timedelta(hours=24), description=(
        "how long a signed request may start a run after it was signed (each request starts "
        "one run only); release schedules' requests are for every fire"))

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else kepler_home() / path

    def signers(self, relying_party: "RelyingParty | None" = None) -> "AllowedSigners":
        """The allowed signers now (read each time: a rotation reaches the next operation),
        with the passkeys whose enrolment verifies when the console is configured; none
        when not configured, and then no approval can be verified."""
        from kepler.identity import AllowedSigners

        if not self.allowed_signers:
            return AllowedSigners(request_valid_for=self.request_valid_for)
        path = self.path(self.allowed_signers)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"identity.allowed_signers: cannot read {path}: {e.strerror}") from None
        try:
            signers = AllowedSigners.parse(text, str(path))
        except ValueError as e:
            raise ConfigError(f"identity.allowed_signers: {e}") from None
        signers = signers.model_copy(update={"request_valid_for": self.request_valid_for})
        if relying_party is None or not self.passkeys:
            return signers
        return signers.model_copy(update={"relying_party": relying_party,
                                          "passkeys": self.enrolled(signers, relying_party)[0]})

    def enrolled(self, signers: "AllowedSigners", rp: "RelyingParty") -> tuple[list, list[str]]:
        """The passkeys file's verified passkeys, and why each other entry does not count."""
        from kepler.enrolment import read_entries, verified_passkeys

        if not self.passkeys:
            return [], []
        try:
            entries = read_entries(self.path(self.passkeys))
        except (OSError, ValueError) as e:
            raise ConfigError(f"identity.passkeys: {e}") from None
        return verified_passkeys(entries, signers, rp, datetime.now(timezone.utc))
