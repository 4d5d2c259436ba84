"""Passkeys: the WebAuthn half of signing, for the console. A person's passkey signs the
same statements their SSH key signs (kepler/identity.py ties the two together): the
challenge the browser signs is the SHA-256 of the statement's canonical bytes, and
verification is pure computation over the assertion and the registered public key (the
`webauthn` library), so a workflow and the apply-time check run it themselves, trusting
nothing the console says. User verification (PIN, biometrics) is required.

Single use is the statement's own (its nonce and run, as for SSH signatures): the
authenticator's sign count is not tracked, as passkeys that sync report 0.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from pydantic import Field
from temporalio import workflow
from webauthn import (
    generate_authentication_options, generate_registration_options, options_to_json,
    verify_authentication_response, verify_registration_response,
)
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse, InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor, ResidentKeyRequirement,
    UserVerificationRequirement,
)

from kepler.workloads import Model

B64URL = r"^[A-Za-z0-9_-]*$"
MAX_RESPONSE = 8 * 1024  # what a browser returns from create() or get(), as JSON


class PasskeyError(ValueError):
    """An assertion or registration that does not hold; the message names the rule."""


class PasskeyCredential(Model):
    """A registered credential's id and COSE public key (base64url)."""
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


def challenge_of(canonical: bytes) -> bytes:
    """The WebAuthn challenge for a statement's canonical bytes: their SHA-256."""
    return hashlib.sha256(canonical).digest()


def verify_assertion(assertion: PasskeyAssertion, public_key: str, challenge: bytes,
                     rp_id: str, origins: list[str]) -> None:
    """PasskeyError unless the credential with `public_key` signed `challenge` with user
    verification, for this relying party and one of its origins."""
    # cryptography imports parts of itself (its Rust bindings) on first use: in a workflow
    # those imports must reach the worker's modules, not the sandbox's fresh copies (a
    # second copy of the bindings aborts the process). Outside a workflow this does nothing.
    with workflow.unsafe.imports_passed_through():
        _verify(assertion, public_key, challenge, rp_id, origins)


def _verify(assertion: PasskeyAssertion, public_key: str, challenge: bytes, rp_id: str,
            origins: list[str]) -> None:
    try:
        verify_authentication_response(
            credential={"id": assertion.credential_id, "rawId": assertion.credential_id,
                        "type": "public-key", "response": {
                            "authenticatorData": assertion.authenticator_data,
                            "clientDataJSON": assertion.client_data_json,
                            "signature": assertion.signature}},
            expected_challenge=challenge, expected_rp_id=rp_id, expected_origin=origins,
            credential_public_key=unb64url(public_key),
            credential_current_sign_count=0, require_user_verification=True)
    except InvalidAuthenticationResponse as e:
        raise PasskeyError(f"passkey: {e}") from None
    except (ValueError, KeyError, TypeError) as e:  # undecodable parts
        raise PasskeyError(f"passkey: malformed assertion ({type(e).__name__})") from None


def assertion_from_browser(text: str) -> PasskeyAssertion:
    """The JSON the console's script posts (PublicKeyCredential.toJSON()); PasskeyError
    naming what is wrong."""
    if len(text) > MAX_RESPONSE:
        raise PasskeyError(f"passkey: the browser's response is over {MAX_RESPONSE} bytes")
    try:
        data = json.loads(text)
        response = data["response"]
        return PasskeyAssertion(credential_id=data["id"],
                                authenticator_data=response["authenticatorData"],
                                client_data_json=response["clientDataJSON"],
                                signature=response["signature"])
    except (ValueError, KeyError, TypeError) as e:
        raise PasskeyError(f"passkey: not a WebAuthn assertion ({type(e).__name__}: "
                           f"{str(e)[:200]})") from None


def verify_registration(text: str, challenge: bytes, rp_id: str,
                        origins: list[str]) -> PasskeyCredential:
    """The credential a browser created for `challenge` with user verification."""
    if len(text) > MAX_RESPONSE:
        raise PasskeyError(f"passkey: the browser's response is over {MAX_RESPONSE} bytes")
    try:
        done = verify_registration_response(
            credential=text, expected_challenge=challenge, expected_rp_id=rp_id,
            expected_origin=origins, require_user_verification=True)
    except InvalidRegistrationResponse as e:
        raise PasskeyError(f"passkey: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise PasskeyError(f"passkey: not a WebAuthn registration ({type(e).__name__})") from None
    return PasskeyCredential(credential_id=b64url(done.credential_id),
                             public_key=b64url(done.credential_public_key))


def registration_options(rp_id: str, rp_name: str, person: str, challenge: bytes,
                         exclude: list[str]) -> dict[str, Any]:
    """navigator.credentials.create()'s options (JSON) for `person`'s new passkey."""
    options = generate_registration_options(
        rp_id=rp_id, rp_name=rp_name, user_name=person, user_id=person.encode(),
        challenge=challenge, timeout=120_000,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c)) for c in exclude],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED))
    return json.loads(options_to_json(options))


def authentication_options(rp_id: str, challenge: bytes, allow: list[str]) -> dict[str, Any]:
    """navigator.credentials.get()'s options (JSON): sign `challenge` with one of `allow`
    (any of the person's passkeys; none listed: whichever the browser offers)."""
    options = generate_authentication_options(
        rp_id=rp_id, challenge=challenge, timeout=120_000,
        allow_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c)) for c in allow],
        user_verification=UserVerificationRequirement.REQUIRED)
    return json.loads(options_to_json(options))
