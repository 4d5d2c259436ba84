"""Passkeys: a person's WebAuthn credential signs the same statement their SSH key signs
(kepler/identity.py), for the console (issue 28). The challenge the browser signs is the
digest of the statement's canonical bytes; verification is pure computation over the
assertion and the registered public key (the `webauthn` library), so a workflow and the
apply-time check can run it themselves, trusting nothing the console says.

A registered passkey names its person; user verification (PIN, biometrics) is required.
Single use is the statement's own (its nonce and run, as for SSH signatures): the
authenticator's sign count is not tracked, as passkeys that sync report 0.
"""

from __future__ import annotations

import base64
import hashlib

from pydantic import Field
from webauthn import verify_authentication_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse

from kepler.identity import InvalidStatement, Statement
from kepler.validation import UserName
from kepler.workloads import Model

B64URL = r"^[A-Za-z0-9_-]*$"


class Passkey(Model):
    """One registered credential: whose it is, its id and its COSE public key."""
    person: UserName
    credential_id: str = Field(min_length=16, max_length=1400, pattern=B64URL)
    public_key: str = Field(min_length=16, max_length=2000, pattern=B64URL)


class PasskeyAssertion(Model):
    """What the browser returns from navigator.credentials.get(), base64url fields."""
    credential_id: str = Field(min_length=16, max_length=1400, pattern=B64URL)
    authenticator_data: str = Field(min_length=50, max_length=4000, pattern=B64URL)
    client_data_json: str = Field(min_length=20, max_length=4000, pattern=B64URL)
    signature: str = Field(min_length=16, max_length=2000, pattern=B64URL)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def challenge_of(statement: Statement) -> bytes:
    """The WebAuthn challenge for `statement`: the SHA-256 of its canonical bytes."""
    return hashlib.sha256(statement.canonical()).digest()


def verify_assertion(assertion: PasskeyAssertion, passkeys: list[Passkey], statement: Statement,
                     rp_id: str, origins: list[str]) -> str:
    """The person whose registered passkey signed exactly `statement` with user
    verification, for this relying party and one of its origins; InvalidStatement
    naming the rule otherwise."""
    key = next((k for k in passkeys if k.credential_id == assertion.credential_id), None)
    if key is None:
        raise InvalidStatement("passkey: credential not registered for anyone")
    try:
        verify_authentication_response(
            credential={"id": assertion.credential_id, "rawId": assertion.credential_id,
                        "type": "public-key", "response": {
                            "authenticatorData": assertion.authenticator_data,
                            "clientDataJSON": assertion.client_data_json,
                            "signature": assertion.signature}},
            expected_challenge=challenge_of(statement), expected_rp_id=rp_id,
            expected_origin=origins,
            credential_public_key=unb64url(key.public_key),
            credential_current_sign_count=0, require_user_verification=True)
    except InvalidAuthenticationResponse as e:
        raise InvalidStatement(f"passkey: {e}") from None
    except (ValueError, KeyError, TypeError) as e:  # undecodable parts
        raise InvalidStatement(f"passkey: malformed assertion ({type(e).__name__})") from None
    return key.person
