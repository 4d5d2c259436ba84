"""The console's own tokens: sessions, CSRF, sign-in challenges and prepared actions, each
an HMAC over its content with the console's secret (KEPLER_CONSOLE_SECRET, else one kept
in the Kepler home), bound to a purpose and an expiry.

None of them is authority over production: a session lets its holder read; approving,
rejecting, steering a canary and starting requests take a passkey's assertion of the exact
statement, which the workflow verifies itself (kepler/identity.py). A stolen cookie reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kepler.passkeys import b64url, unb64url

SESSION_COOKIE = "kepler_session"
MAX_TOKEN = 16 * 1024
USED_CHALLENGES = 10_000  # sign-in challenges remembered as used


class BadToken(ValueError):
    pass


@dataclass(frozen=True)
class Viewer:
    """Who reads: signed in with a passkey, or named by the SSO proxy's trusted header."""
    person: str
    via: str  # "passkey" or "sso"


class Tokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._used: dict[str, datetime] = {}

    def _mac(self, payload: str) -> str:
        return b64url(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def make(self, purpose: str, data: dict[str, Any], ttl: timedelta) -> str:
        expires = datetime.now(timezone.utc) + ttl
        payload = b64url(json.dumps({**data, "purpose": purpose, "expires": expires.isoformat()},
                                    separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def read(self, purpose: str, token: str) -> dict[str, Any]:
        """The data of a token this console made for `purpose` and that has not expired."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            raise BadToken("not a console token")
        payload, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise BadToken("not made by this console")
        try:
            data = json.loads(unb64url(payload))
        except ValueError:
            raise BadToken("unreadable") from None
        if data.get("purpose") != purpose:
            raise BadToken(f"made for {data.get('purpose')}, not {purpose}")
        if datetime.fromisoformat(data["expires"]) < datetime.now(timezone.utc):
            raise BadToken("expired (reload the page)")
        return data

    def csrf(self, session: str) -> str:
        """The CSRF token of a session: pages put it in forms, scripts in X-CSRF-Token."""
        return self._mac(f"csrf\n{session}")

    def check_csrf(self, session: str, given: str) -> bool:
        return bool(session) and hmac.compare_digest(given or "", self.csrf(session))

    def challenge(self, ttl: timedelta) -> tuple[bytes, str]:
        """A fresh sign-in challenge and the token that carries it to the sign-in."""
        challenge = secrets.token_bytes(32)
        return challenge, self.make("sign-in", {"challenge": b64url(challenge)}, ttl)

    def use_challenge(self, token: str) -> bytes:
        """The challenge of a sign-in token, once: a replayed sign-in is refused."""
        data = self.read("sign-in", token)
        now = datetime.now(timezone.utc)
        self._used = {k: v for k, v in self._used.items() if v > now}
        if data["challenge"] in self._used or len(self._used) >= USED_CHALLENGES:
            raise BadToken("this sign-in was used already (reload the page)")
        self._used[data["challenge"]] = datetime.fromisoformat(data["expires"])
        return unb64url(data["challenge"])
