"""Enrolling a passkey with an SSH key, and the platform's passkeys file.

A person runs `kepler console enroll`: it signs an `enroll` statement with their SSH key
(fresh nonce, the console's RP ID) and prints a one-time link to the console carrying it.
The console checks it (a person's key, listed for `kepler`, signed within ENROL_VALID_FOR,
its nonce never used), has the browser create a passkey with the statement's digest as the
challenge, and appends the credential with the signed statement to the passkeys file
(`identity.passkeys`, JSON lines, platform-owned, next to the allowed signers).

Every entry proves itself: whoever reads the file (the worker, the apply-time check)
verifies each entry's enrolment against the allowed signers and keeps only those whose
SSH signature holds, whose signer is the person named, and whose nonce no other entry
uses; so writing the file grants nothing, and removing a person's SSH key removes their
passkeys. Removing a line revokes that passkey.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import Field, ValidationError

from kepler.identity import (
    MAX_PASSKEYS_FILE, AllowedSigners, InvalidStatement, Passkey, RelyingParty,
    SignedStatement, Statement, new_nonce, verify,
)
from kepler.passkeys import PasskeyCredential

ENROL_VALID_FOR = timedelta(minutes=15)  # how long an enrolment link may be used


class EnrolledPasskey(PasskeyCredential):
    """One line of the passkeys file."""
    person: str = Field(max_length=100)
    enrolment: SignedStatement
    enrolled_at: datetime


def enrolment_statement(rp_id: str, now: datetime) -> Statement:
    """What a person signs with their SSH key to enrol a passkey at the console `rp_id`."""
    return Statement(action="enroll", operation="passkey", service="console", env="all",
                     comment=f"enrol a passkey for {rp_id}", nonce=new_nonce(), issued_at=now)


def check_enrolment(signed: SignedStatement, signers: AllowedSigners, rp: RelyingParty,
                    at: datetime) -> str:
    """The person an enrolment statement enrols a passkey for (InvalidStatement naming the
    rule otherwise): signed with an SSH key listed for `kepler`, for this console."""
    if signed.passkey is not None:
        raise InvalidStatement("enroll: a passkey is enrolled with an SSH key, never another passkey")
    who = verify(signed, signers, at)
    s = signed.statement
    if s.action != "enroll" or s.operation != "passkey" or not s.nonce:
        raise InvalidStatement(f"enroll: a {s.action} statement enrols nothing")
    if s.comment != f"enrol a passkey for {rp.rp_id}":
        raise InvalidStatement(f"enroll: signed for another console ({s.comment!r}), not "
                               f"{rp.rp_id}")
    if who.kind != "person" or who.via:
        raise InvalidStatement(f"enroll: {who} is not a person signing for themselves")
    return who.name


def check_fresh_enrolment(signed: SignedStatement, entries: list[EnrolledPasskey],
                          now: datetime) -> None:
    """The console's own checks of a link: unused and recent."""
    s = signed.statement
    if any(e.enrolment.statement.nonce == s.nonce for e in entries):
        raise InvalidStatement("enroll: this link was used already (run `kepler console enroll` "
                               "again)")
    if not timedelta(minutes=-5) <= now - s.issued_at <= ENROL_VALID_FOR:
        raise InvalidStatement(f"enroll: the link was signed at {s.issued_at:%Y-%m-%d %H:%M} UTC; "
                               f"a link is valid for {ENROL_VALID_FOR} (run `kepler console "
                               "enroll` again)")


def read_entries(path: Path) -> list[EnrolledPasskey]:
    """Every line of the passkeys file (none when it does not exist); ValueError naming the
    line that is not an entry."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    if len(text) > MAX_PASSKEYS_FILE:
        raise ValueError(f"{path}: over {MAX_PASSKEYS_FILE} bytes")
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(EnrolledPasskey.model_validate_json(line))
        except ValidationError as e:
            raise ValueError(f"{path}:{n}: not a passkey entry ({e.errors()[0]['msg']})") from None
    return entries


def verified_passkeys(entries: list[EnrolledPasskey], signers: AllowedSigners, rp: RelyingParty,
                      at: datetime) -> tuple[list[Passkey], list[str]]:
    """The entries whose enrolment holds now, and why each other one does not."""
    nonces: dict[str, int] = {}
    for e in entries:
        nonces[e.enrolment.statement.nonce] = nonces.get(e.enrolment.statement.nonce, 0) + 1
    kept, problems = [], []
    for e in entries:
        try:
            person = check_enrolment(e.enrolment, signers, rp, at)
            if person != e.person:
                raise InvalidStatement(f"enroll: signed by {person}, but the entry names {e.person}")
            if nonces[e.enrolment.statement.nonce] > 1:
                raise InvalidStatement("enroll: one link enrolled several passkeys; none counts")
        except InvalidStatement as why:
            problems.append(f"{e.person}'s passkey {e.credential_id[:12]}…: {why}")
            continue
        kept.append(Passkey(person=e.person, credential_id=e.credential_id,
                            public_key=e.public_key))
    return kept, problems


def append_entry(path: Path, entry: EnrolledPasskey) -> None:
    """Add `entry` to the passkeys file, under a lock (two enrolments at once both land)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(fd, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry.model_dump(mode="json"), sort_keys=True) + "\n")
