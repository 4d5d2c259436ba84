"""Optional payload encryption: an AES-GCM PayloadCodec with key ids and rotation.

Enabled by `KEPLER_CODEC_KEYS`, a comma-separated list of `id:base64key` (16, 24 or 32
bytes: AES-128/192/256). The first key is the current one: every payload is encrypted
with it and carries its id in the payload metadata; any listed key decrypts. To rotate,
put the new key first and keep the old ones until no open workflow's history needs them.

    KEPLER_CODEC_KEYS="2026-11:$(head -c32 /dev/urandom | base64),2026-05:<old key>"

Workflow and activity inputs, results, queries and updates become opaque in Temporal's
history; failure messages are encoded too. The Temporal UI reads them through
`kepler codec-server`. Search attributes stay readable (the UI filters on them).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Mapping, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NONCE_BYTES = 12
ENV_KEYS = "KEPLER_CODEC_KEYS"


class CodecError(ValueError):
    """The key configuration is invalid, or a payload cannot be decrypted."""


def parse_keys(text: str) -> tuple[str, dict[str, bytes]]:
    """`id:base64,id:base64` -> (current id, {id: key}). Errors never echo key material."""
    keys: dict[str, bytes] = {}
    current = ""
    for n, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        kid, sep, encoded = item.partition(":")
        if not sep or not KEY_ID_RE.fullmatch(kid):
            raise CodecError(f"{ENV_KEYS}: entry {n + 1} must be id:base64key with an id of "
                             "letters, digits, '.', '_' or '-'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CodecError(f"{ENV_KEYS}: key {kid!r} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise CodecError(f"{ENV_KEYS}: key {kid!r} must be 16, 24 or 32 bytes, not {len(key)}")
        if kid in keys:
            raise CodecError(f"{ENV_KEYS}: key id {kid!r} is listed twice")
        keys[kid] = key
        current = current or kid
    if not keys:
        raise CodecError(f"{ENV_KEYS}: no keys given")
    return current, keys


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise CodecError(f"current key {current!r} is not among the keys")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.current = current

    @classmethod
    def from_text(cls, text: str) -> "EncryptionCodec":
        current, keys = parse_keys(text)
        return cls(keys, current)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        kid = self.current.encode()
        sealed = self._ciphers[self.current].encrypt(nonce, payload.SerializeToString(), kid)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: kid}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was enabled: pass through
        kid = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise CodecError(f"payload encrypted with unknown key id {kid!r}; add it to {ENV_KEYS}")
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], kid.encode())
        except Exception:  # InvalidTag: wrong key under that id, or tampered data
            raise CodecError(f"payload under key id {kid!r} does not authenticate") from None
        return Payload.FromString(plain)


def codec_from_env(environ: Mapping[str, str] | None = None) -> EncryptionCodec | None:
    text = (environ if environ is not None else os.environ).get(ENV_KEYS, "").strip()
    return EncryptionCodec.from_text(text) if text else None
