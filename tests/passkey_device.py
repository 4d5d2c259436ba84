"""A software passkey: cryptography's P-256 and cbor2 producing the bytes a browser returns
from navigator.credentials.get(), for tests that drive the Temporal client directly (the
console's browser tests use Chromium's virtual authenticator instead). Enrolment is real:
an `enroll` statement signed with the person's SSH key from the session's Kepler home."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kepler.enrolment import EnrolledPasskey, append_entry, enrolment_statement
from kepler.identity import SignedStatement, Statement, sign
from kepler.passkeys import PasskeyAssertion, b64url, challenge_of

RP, ORIGIN = "localhost", "http://localhost:8480"


def key_of(person: str) -> Path:
    return Path(os.environ["KEPLER_HOME"]) / "keys" / person


class SoftPasskey:
    def __init__(self, person: str = "alice", rp: str = RP, origin: str = ORIGIN) -> None:
        self.person, self.rp, self.origin = person, rp, origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = b64url(secrets.token_bytes(32))

    def public_key(self) -> str:
        numbers = self.key.public_key().public_numbers()
        return b64url(cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                                   -3: numbers.y.to_bytes(32, "big")}))

    def entry(self, enrolled_by: str | None = None, statement: Statement | None = None) -> EnrolledPasskey:
        """This passkey's line of the passkeys file, enrolled with `enrolled_by`'s SSH key."""
        now = datetime.now(timezone.utc)
        enrolment = sign(statement or enrolment_statement(self.rp, now), key_of(enrolled_by or self.person))
        return EnrolledPasskey(person=self.person, credential_id=self.credential_id,
                               public_key=self.public_key(), enrolment=enrolment, enrolled_at=now)

    def enrol(self, passkeys_file: Path) -> "SoftPasskey":
        append_entry(passkeys_file, self.entry())
        return self

    def assertion(self, statement: Statement, rp: str | None = None, origin: str | None = None,
                  flags: int = 0x05, kind: str = "webauthn.get") -> PasskeyAssertion:
        return self.assert_challenge(challenge_of(statement.canonical()), rp, origin, flags, kind)

    def assert_challenge(self, challenge: bytes, rp: str | None = None, origin: str | None = None,
                         flags: int = 0x05, kind: str = "webauthn.get") -> PasskeyAssertion:
        data = hashlib.sha256((rp or self.rp).encode()).digest() + bytes([flags]) + bytes(4)
        client = json.dumps({"type": kind, "challenge": b64url(challenge),
                             "origin": origin or self.origin}).encode()
        signature = self.key.sign(data + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return PasskeyAssertion(credential_id=self.credential_id, authenticator_data=b64url(data),
                                client_data_json=b64url(client), signature=b64url(signature))

    def browser_json(self, assertion: PasskeyAssertion) -> dict[str, object]:
        """`assertion` as the console's script posts it (PublicKeyCredential.toJSON())."""
        return {"id": assertion.credential_id, "rawId": assertion.credential_id, "type": "public-key",
                "response": {"authenticatorData": assertion.authenticator_data,
                             "clientDataJSON": assertion.client_data_json,
                             "signature": assertion.signature}}

    def sign(self, statement: Statement, **kwargs: object) -> SignedStatement:
        return SignedStatement(statement=statement, passkey=self.assertion(statement, **kwargs))  # type: ignore[arg-type]
