"""Who is who: signed statements, verified against the platform's allowed-signers file.

People sign with the SSH keys they use for git, in the SSH signature format
(`ssh-keygen -Y sign`), verified here with the `sshsig` library. The allowed-signers
file (ssh-keygen's format, named by `identity.allowed_signers` in kepler.yaml) says
whose each key is and, through its `namespaces=` option, what it may sign:

- `kepler`: a person's own requests, approvals and rejections;
- `kepler-delegate`: a service (chat-ops) vouching for the person it names, as
  "<name> via slack:<user id>";
- `kepler-system`: a system identity (the alert receiver, a schedule's fire) that may
  request, and never approve.

People may also sign with a passkey (kepler/passkeys.py), in the console: a passkey is
enrolled with the person's SSH key (an `enroll` statement they sign, kept with the
credential in the platform's passkeys file, `identity.passkeys`), and is theirs only while
that key is listed for `kepler`. A passkey signs as the person, never as a delegate or a
system.

Verification is pure computation, so workflows run it themselves (in update validators
and at apply time) against the signers they loaded through an activity.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import sshsig
from pydantic import BaseModel, Field
from sshsig.allowed_signers import AllowedSigner
from sshsig.sshsig import SshsigSignature

from kepler.passkeys import (
    PasskeyAssertion, PasskeyCredential, PasskeyError, challenge_of, verify_assertion,
)
from kepler.validation import UserName
from kepler.workloads import Model

PERSON, DELEGATE, SYSTEM = "kepler", "kepler-delegate", "kepler-system"
NAMESPACES = (PERSON, DELEGATE, SYSTEM)
MAX_SIGNATURE = 4096  # an armored ed25519/ecdsa/rsa-4096 signature is well under this
MAX_SIGNERS_FILE = 256 * 1024
MAX_PASSKEYS_FILE = 1024 * 1024

Action = Literal["request", "approve", "reject", "pause", "resume", "promote", "abort", "restore",
                 "enroll"]


CLOCK_SKEW = timedelta(minutes=5)  # a signer's clock may run this far ahead of the checker's


SIGN_TIMEOUT_S = 60  # an agent may ask for a touch or a passphrase


class SigningError(RuntimeError):
    pass


class InvalidStatement(ValueError):
    """A signature that does not verify, or a signer the platform does not list."""


class Signer(Model):
    principal: UserName
    namespaces: list[str]
    key: str  # "ssh-ed25519 AAAA..."
    # ssh-keygen's line options: the key signs for Kepler only within [valid_after,
    # valid_before] (both inclusive, as `ssh-keygen -Y verify` has it), and a
    # cert-authority's key signs nothing itself (Kepler takes no certificates).
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    cert_authority: bool = False

    def invalid_at(self, at: datetime) -> str:
        """Why this key may not sign at `at`, or ''."""
        if self.valid_after is not None and at < self.valid_after:
            return f"not valid before {self.valid_after:%Y-%m-%d %H:%M:%S} UTC (valid-after)"
        if self.valid_before is not None and at > self.valid_before:
            return f"expired at {self.valid_before:%Y-%m-%d %H:%M:%S} UTC (valid-before)"
        return ""


def parse_signer_time(value: str) -> datetime:
    """ssh-keygen's YYYYMMDD[HHMM[SS]][Z]: UTC with the Z, else the local time of the
    machine reading the file (the worker's, as for ssh-keygen run there)."""
    utc = value.endswith("Z")
    digits = value[:-1] if utc else value
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        raise ValueError(f"{value!r} is not YYYYMMDD[HHMM[SS]][Z]")
    parsed = datetime.strptime(digits, formats[len(digits)])
    if utc:
        return parsed.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(time.mktime(parsed.timetuple()), timezone.utc)


class Passkey(PasskeyCredential):
    """A person's enrolled passkey, as it travels to the workflows (its enrolment was
    verified when the platform's file was read)."""
    person: UserName


class RelyingParty(Model):
    """Where passkeys sign: the console's RP ID (its host) and origins (console.url)."""
    rp_id: str = Field(min_length=1, max_length=253)
    origins: list[str] = Field(min_length=1, max_length=10)


class AllowedSigners(Model):
    signers: list[Signer] = Field(default_factory=list, max_length=10_000)
    passkeys: list[Passkey] = Field(default_factory=list, max_length=2_000)
    relying_party: RelyingParty | None = None
    # identity.request_valid_for: how long a signed request may start a run. It travels
    # with the signers to the workflows that check requests; None: read before requests
    # expired (a run from before replays as it ran).
    request_valid_for: timedelta | None = None

    @classmethod
    def parse(cls, text: str, source: str = "allowed signers") -> "AllowedSigners":
        """ssh-keygen's format; every line must name one principal and the kepler
        namespaces its key may sign for. Errors name the line."""
        if len(text) > MAX_SIGNERS_FILE:
            raise ValueError(f"{source}: over {MAX_SIGNERS_FILE} bytes")
        signers = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = AllowedSigner.parse(line)
                sshsig.PublicKey.from_openssh_str(f"{entry.key_type} {entry.base64_key}")
            except (ValueError, NotImplementedError) as e:
                raise ValueError(f"{source}:{n}: {e}") from None
            namespaces = [ns for ns in ((entry.options or {}).get("namespaces") or "").split(",") if ns]
            if not namespaces or any(ns not in NAMESPACES for ns in namespaces):
                raise ValueError(f"{source}:{n}: namespaces= must list some of {', '.join(NAMESPACES)}")
            if "," in entry.principals or "*" in entry.principals:
                raise ValueError(f"{source}:{n}: one principal per key, no patterns")
            options = entry.options or {}
            try:
                bounds = {field: parse_signer_time(options[option]) for field, option in (
                    ("valid_after", "valid-after"), ("valid_before", "valid-before"))
                    if option in options}
            except ValueError as e:
                raise ValueError(f"{source}:{n}: valid-after/valid-before: {e}") from None
            signers.append(Signer(principal=entry.principals, namespaces=namespaces,
                                  key=f"{entry.key_type} {entry.base64_key}",
                                  cert_authority="cert-authority" in options, **bounds))
        return cls(signers=signers)

    def names(self, namespace: str) -> list[str]:
        return sorted({s.principal for s in self.signers if namespace in s.namespaces})


class Statement(Model):
    """What a signature covers: one request or decision, down to the run and the digests."""
    action: Action
    operation: str = Field(max_length=40)
    service: str = Field(max_length=63)
    env: str = Field(max_length=63)
    workflow_id: str = Field("", max_length=200)
    run_id: str = Field("", max_length=100)
    gate: int = Field(0, ge=0, le=1000)  # which gate of the run (a canary's promotion is the 2nd)
    digests: list[str] = Field(default_factory=list, max_length=50)
    commits: list[str] = Field(default_factory=list, max_length=50)
    request_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")  # a request: its exact content
    nonce: str = Field("", pattern=r"^([0-9a-f]{32})?$")  # a request's: one run may use it
    on_behalf_of: str = Field("", max_length=100)  # a delegate's: "alice via slack:U123"
    comment: str = Field("", max_length=500)
    issued_at: datetime

    def canonical(self) -> bytes:
        """The exact bytes signed: sorted-key JSON of every field (the nonce only when set:
        statements signed before it existed keep their bytes, so their signatures verify)."""
        data = self.model_dump(mode="json")
        if not self.nonce:
            del data["nonce"]
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def new_nonce() -> str:
    return secrets.token_hex(16)


def request_digest(request: BaseModel) -> str:
    """What a signed request covers: every field of the request but its signature. Fields
    at their defaults are left out, so a field added later does not void a request signed
    before it (a run in flight when Kepler is upgraded still verifies on replay)."""
    data = request.model_dump(mode="json", exclude={"signed"}, exclude_defaults=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SignedStatement(Model):
    """A statement signed with an SSH key (`signature`) or a passkey (`passkey`)."""
    statement: Statement
    signature: str = Field("", max_length=MAX_SIGNATURE)
    passkey: PasskeyAssertion | None = None

    def proof(self) -> str:
        """What marks this signed statement as used (a request starts one run)."""
        return f"passkey:{self.passkey.signature}" if self.passkey else self.signature


class RequestUse(Model):
    """Which earlier run of the calling workflow id started with this signed request (the
    activity temporal.request_used): runs started since `since` are looked at."""
    signature: str = Field(max_length=MAX_SIGNATURE)
    since: datetime
    handed_over: bool = Field(False, description=(
        "a blue-green run: the run it continues must be a release on this worker's task "
        "queue started with this very request (it hands over); that run is then no other use"))


class Identity(Model):
    name: str
    kind: Literal["person", "system"]
    via: str = ""  # "slack:U123" when a delegate vouched for the person

    def __str__(self) -> str:
        return f"{self.name} via {self.via}" if self.via else self.name


def verify(signed: SignedStatement, signers: AllowedSigners, at: datetime | None = None) -> Identity:
    """The identity that signed `signed`, or InvalidStatement naming why not. Keys are
    matched by their SSH wire encoding (no key serialisation: this runs in workflows).

    `at` is when the key must be valid (its line's valid-after/valid-before): the checker's
    time, as `ssh-keygen -Y verify` uses its own clock, never the statement's issued_at
    (the signer writes that). Workflows pass workflow.now(); None is the wall clock."""
    if signed.passkey is not None:
        return _verify_passkey(signed, signed.passkey, signers, at or datetime.now(timezone.utc))
    try:
        outer = SshsigSignature.from_armored(signed.signature)
        namespace = outer.namespace.decode("ascii")
    except (ValueError, NotImplementedError, UnicodeDecodeError) as e:
        raise InvalidStatement(f"signature: not an SSH signature ({e})") from None
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(outer.public_key).digest()).decode().rstrip("=")
    if namespace not in NAMESPACES:
        raise InvalidStatement(f"signature: signed for namespace {namespace!r}, not Kepler's")
    if b"-cert-v01@openssh.com" in outer.public_key[:64]:
        raise InvalidStatement("signature: made with an SSH certificate; Kepler verifies plain keys "
                               "listed in the allowed signers only (sign with the key itself)")
    listed = [s for s in signers.signers if namespace in s.namespaces and not s.cert_authority
              and base64.b64decode(s.key.split()[1]) == outer.public_key]
    if not listed:
        raise InvalidStatement(f"signature: the key {fingerprint} is not listed for {namespace} "
                               "in the platform's allowed signers")
    when = at or datetime.now(timezone.utc)
    signer = next((s for s in listed if not s.invalid_at(when)), None)
    if signer is None:
        raise InvalidStatement(f"signature: the key {fingerprint} of {listed[0].principal} is "
                               f"{listed[0].invalid_at(when)} in the platform's allowed signers")
    try:
        sshsig.check_signature(signed.statement.canonical(), signed.signature, namespace)
    except sshsig.InvalidSignature:
        raise InvalidStatement("signature: does not verify for this statement (altered, or "
                               "signed for something else)") from None
    except NotImplementedError as e:
        raise InvalidStatement(f"signature: {e}") from None
    return _identity(signer, namespace, signed.statement)


def _verify_passkey(signed: SignedStatement, assertion: PasskeyAssertion,
                    signers: AllowedSigners, at: datetime) -> Identity:
    """A passkey's statement: a registered credential signed exactly this statement, and its
    person still has an SSH key listed for `kepler` and valid `at` (the key that enrolled it)."""
    if signed.signature:
        raise InvalidStatement("signature: a statement is signed with an SSH key or a passkey, "
                               "not both")
    rp = signers.relying_party
    if rp is None:
        raise InvalidStatement("passkey: the platform has no console (console.url in "
                               "kepler.yaml), so no passkey can be verified")
    key = next((k for k in signers.passkeys if k.credential_id == assertion.credential_id), None)
    if key is None:
        raise InvalidStatement("passkey: this credential is not enrolled in the platform's "
                               "passkeys (identity.passkeys)")
    person = [s for s in signers.signers if s.principal == key.person and PERSON in s.namespaces
              and not s.cert_authority]
    if not any(not s.invalid_at(at) for s in person):
        raise InvalidStatement(f"passkey: {key.person} has no SSH key listed for {PERSON} and "
                               "valid now in the platform's allowed signers, so their passkeys "
                               "sign nothing")
    try:
        verify_assertion(assertion, key.public_key, challenge_of(signed.statement.canonical()),
                         rp.rp_id, rp.origins)
    except PasskeyError as e:
        raise InvalidStatement(f"{e} (it does not sign this statement)") from None
    if signed.statement.on_behalf_of:
        raise InvalidStatement("on_behalf_of: only a delegate's key may vouch for someone")
    if signed.statement.action == "enroll":
        raise InvalidStatement("enroll: a passkey is enrolled with an SSH key, never another passkey")
    return Identity(name=key.person, kind="person")


def _identity(signer: Signer, namespace: str, statement: Statement) -> Identity:
    if namespace == PERSON:
        if statement.on_behalf_of:
            raise InvalidStatement("on_behalf_of: only a delegate's key may vouch for someone")
        return Identity(name=signer.principal, kind="person")
    if namespace == SYSTEM:
        if statement.action != "request" or statement.on_behalf_of:
            raise InvalidStatement(f"{signer.principal} is a system identity: it may request, "
                                   "never approve, reject or vouch")
        return Identity(name=signer.principal, kind="system")
    name, sep, via = statement.on_behalf_of.partition(" via ")
    if not sep or not name or not via:
        raise InvalidStatement(f"on_behalf_of: {signer.principal} signs as a delegate and must "
                               "name the person, as 'NAME via CHANNEL:ID'")
    return Identity(name=name, kind="person", via=via)


def describe(payload: Any) -> str:
    """A statement, one line, for refusals and the audit."""
    s: Statement = payload.statement if isinstance(payload, SignedStatement) else payload
    return (f"{s.action} {s.operation} of {s.service} in {s.env} ({s.workflow_id or '-'} run "
            f"{s.run_id or '-'}; digests {', '.join(d[-12:] for d in s.digests) or '-'})")


def sign(statement: Statement, key: Path, namespace: str = PERSON) -> SignedStatement:
    binary = shutil.which("ssh-keygen")
    if binary is None:
        raise SigningError("ssh-keygen not found: install openssh-client to sign")
    if not key.exists():
        raise SigningError(f"signing key {key} not found (KEPLER_SIGNING_KEY names it)")
    try:
        done = subprocess.run([binary, "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
                              input=statement.canonical(), capture_output=True,
                              timeout=SIGN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SigningError(f"signing with {key} took over {SIGN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise SigningError(f"signing with {key} failed: "
                           f"{done.stderr.decode(errors='replace').strip()[:300]}")
    return SignedStatement(statement=statement, signature=done.stdout.decode())
