"""kepler/passkeys.py: a passkey's assertion of exactly a statement, verified with no I/O.
The authenticator here is software (cryptography's P-256, COSE via cbor2) producing the
bytes a browser returns; the browser tests of the console use Chromium's virtual one."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kepler.identity import InvalidStatement, Statement
from kepler.passkeys import Passkey, PasskeyAssertion, b64url, challenge_of, verify_assertion

RP, ORIGIN = "kepler.example", "https://kepler.example"
STATEMENT = Statement(action="approve", operation="release", service="shop", env="prod",
                      workflow_id="shop@prod", run_id="r1", digests=["reg/shop@sha256:" + "a" * 64],
                      issued_at=datetime(2026, 12, 6, tzinfo=timezone.utc))


class SoftAuthenticator:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = b64url(hashlib.sha256(b"cred").digest())

    def passkey(self, person: str = "alice") -> Passkey:
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        return Passkey(person=person, credential_id=self.credential_id, public_key=b64url(cose))

    def assert_(self, statement: Statement, rp: str = RP, origin: str = ORIGIN,
                flags: int = 0x05, kind: str = "webauthn.get") -> PasskeyAssertion:
        data = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + (0).to_bytes(4, "big")
        client = json.dumps({"type": kind, "challenge": b64url(challenge_of(statement)),
                             "origin": origin}).encode()
        signature = self.key.sign(data + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return PasskeyAssertion(credential_id=self.credential_id, authenticator_data=b64url(data),
                                client_data_json=b64url(client), signature=b64url(signature))


def test_an_assertion_of_exactly_the_statement_names_its_person() -> None:
    device = SoftAuthenticator()
    assert verify_assertion(device.assert_(STATEMENT), [device.passkey()], STATEMENT, RP,
                            [ORIGIN]) == "alice"


@pytest.mark.parametrize("change, rule", [
    ({"statement": STATEMENT.model_copy(update={"run_id": "r2"})}, "challenge"),
    ({"rp": "evil.example"}, "RP ID"),
    ({"origin": "https://evil.example"}, "origin"),
    ({"flags": 0x01}, "verif"),  # user present, not verified
    ({"kind": "webauthn.create"}, "type"),
])
def test_another_statement_origin_or_an_unverified_user_is_refused(change: dict, rule: str) -> None:
    device = SoftAuthenticator()
    assertion = device.assert_(change.pop("statement", STATEMENT), **change)
    with pytest.raises(InvalidStatement, match=rf"(?i)passkey: .*{rule}"):
        verify_assertion(assertion, [device.passkey()], STATEMENT, RP, [ORIGIN])


def test_a_forged_or_unregistered_assertion_is_refused() -> None:
    device, other = SoftAuthenticator(), SoftAuthenticator()
    forged = other.assert_(STATEMENT)  # same credential id, another key
    with pytest.raises(InvalidStatement, match="passkey: .*signature"):
        verify_assertion(forged, [device.passkey()], STATEMENT, RP, [ORIGIN])
    stranger = device.assert_(STATEMENT).model_copy(update={"credential_id": b64url(b"x" * 32)})
    with pytest.raises(InvalidStatement, match="not registered"):
        verify_assertion(stranger, [device.passkey()], STATEMENT, RP, [ORIGIN])
