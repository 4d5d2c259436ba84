"""Signed statements: keys made and signatures written by the real ssh-keygen, verified by
kepler/identity.py (the sshsig library) against an allowed-signers file."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from kepler.identity import (
    DELEGATE, PERSON, SYSTEM, AllowedSigners, InvalidStatement, SignedStatement, Statement, verify,
)
from starter.signing import generate_key, sandbox_signers, sign
from tests.helpers import require_binary

require_binary("ssh-keygen")
WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def statement(**changes: object) -> Statement:
    base = dict(action="approve", operation="release", service="shop", env="prod",
                workflow_id="shop@prod", run_id="r-1", digests=["sha256:" + "a" * 64],
                commits=["c" * 40], issued_at=WHEN)
    return Statement(**{**base, **changes})


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], AllowedSigners]:
    home = tmp_path_factory.mktemp("keys")
    keys = {name: home / name for name in ("alice", "bob", "chatops", "alerts", "stranger")}
    for name, path in keys.items():
        generate_key(path, name)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", str(home / "dora")],
                   check=True)
    keys["dora"] = home / "dora"
    roles = {"alice": PERSON, "bob": PERSON, "dora": PERSON, "chatops": DELEGATE, "alerts": SYSTEM}
    lines = ["# who is who", *(f'{name} namespaces="{ns}" {keys[name].with_suffix(".pub").read_text().strip()}'
                               for name, ns in roles.items())]
    return keys, AllowedSigners.parse("\n".join(lines) + "\n")


def test_a_person_signs_and_is_known_by_the_key_not_by_a_typed_name(people) -> None:
    keys, signers = people
    who = verify(sign(statement(), keys["alice"]), signers)
    assert (who.name, who.kind, who.via) == ("alice", "person", "")
    assert verify(sign(statement(), keys["dora"]), signers).name == "dora"  # rsa too


@pytest.mark.parametrize("field,value", [
    ("digests", ["sha256:" + "b" * 64]), ("run_id", "r-2"), ("env", "staging"),
    ("service", "shop2"), ("action", "reject"), ("commits", ["d" * 40]),
])
def test_a_signature_covers_every_field(people, field: str, value: object) -> None:
    keys, signers = people
    signed = sign(statement(), keys["alice"])
    forged = SignedStatement(statement=statement(**{field: value}), signature=signed.signature)
    with pytest.raises(InvalidStatement, match="does not verify"):
        verify(forged, signers)


def test_unlisted_keys_and_wrong_namespaces_are_refused(people) -> None:
    keys, signers = people
    with pytest.raises(InvalidStatement, match="not listed for kepler in"):
        verify(sign(statement(), keys["stranger"]), signers)
    with pytest.raises(InvalidStatement, match="not listed for kepler-delegate"):
        verify(sign(statement(on_behalf_of="alice via slack:U1"), keys["alice"], DELEGATE), signers)
    with pytest.raises(InvalidStatement, match="not an SSH signature"):
        verify(SignedStatement(statement=statement(), signature="-----BEGIN SSH SIGNATURE-----\n"
                               "AAAA\n-----END SSH SIGNATURE-----\n"), signers)


def test_a_delegate_vouches_and_a_system_never_approves(people) -> None:
    keys, signers = people
    who = verify(sign(statement(on_behalf_of="bob via slack:U42"), keys["chatops"], DELEGATE), signers)
    assert str(who) == "bob via slack:U42" and who.kind == "person"
    with pytest.raises(InvalidStatement, match="must name the person"):
        verify(sign(statement(), keys["chatops"], DELEGATE), signers)
    with pytest.raises(InvalidStatement, match="only a delegate's key may vouch"):
        verify(sign(statement(on_behalf_of="bob via slack:U42"), keys["alice"]), signers)
    assert verify(sign(statement(action="request"), keys["alerts"], SYSTEM), signers).kind == "system"
    with pytest.raises(InvalidStatement, match="alerts is a system identity"):
        verify(sign(statement(), keys["alerts"], SYSTEM), signers)


@pytest.mark.parametrize("text,message", [
    ("alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
     ":1: namespaces= must list some of kepler"),
    ('alice namespaces="git" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n',
     ":1: namespaces= must list"),
    ('# c\n*@x namespaces="kepler" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n',
     ":2: one principal per key"),
    ('alice namespaces="kepler" ssh-ed25519 not-base64!\n', ":1:"),
])
def test_a_bad_allowed_signers_file_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllowedSigners.parse(text, "signers")


def test_an_ecdsa_key_is_refused_naming_the_line_and_algorithm(tmp_path: Path) -> None:
    """sshsig verifies ed25519 and rsa; an ecdsa key is refused when the file is read, not
    silently ignored when someone signs with it."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "k")], check=True)
    line = f'eve namespaces="kepler" {(tmp_path / "k.pub").read_text().strip()}\n'
    with pytest.raises(ValueError, match="signers:1: .*ecdsa-sha2-nistp256"):
        AllowedSigners.parse(line, "signers")


def test_the_sandbox_people_get_keys_once_and_an_allowed_signers_file(tmp_path: Path) -> None:
    path = sandbox_signers(tmp_path)
    signers = AllowedSigners.parse(path.read_text())
    assert signers.names(PERSON) == ["alice", "bob", "carol", "dev"]
    assert signers.names(DELEGATE) == ["chatops"] and signers.names(SYSTEM) == ["alerts", "promotions"]
    key = (tmp_path / "keys" / "alice").read_text()
    assert sandbox_signers(tmp_path) == path and (tmp_path / "keys" / "alice").read_text() == key
    assert verify(sign(statement(), tmp_path / "keys" / "bob"), signers).name == "bob"


# The allowed-signers options, as `ssh-keygen -Y verify` honours them (issue 26, item 8).
# Both check at a time: ssh-keygen at -Overify-time (else its clock), Kepler at `at` (a
# workflow's now, else the wall clock), never at the time the statement claims. Times
# without Z are local: both run in Tokyo here, so a local time is not UTC.
AT = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)  # 21:00 in Tokyo


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def ssh_keygen_verifies(line: str, signed: SignedStatement, folder: Path, at: datetime | None) -> bool:
    (folder / "allowed").write_text(line + "\n")
    (folder / "sig").write_text(signed.signature)
    when = [f"-Overify-time={at:%Y%m%d%H%M%SZ}"] if at else []
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(folder / "allowed"), "-I", "alice",
                           "-n", PERSON, "-s", str(folder / "sig"), *when],
                          input=signed.statement.canonical(), capture_output=True, timeout=30)
    return done.returncode == 0


def kepler_verifies(line: str, signed: SignedStatement, at: datetime | None) -> str:
    try:
        verify(signed, AllowedSigners.parse(line + "\n"), at)
    except InvalidStatement as e:
        return str(e)
    return ""


@pytest.mark.parametrize("options,at,accepted", [
    ('namespaces="kepler"', AT, True),
    ('namespaces="kepler",valid-before="20260615120000Z"', AT, True),    # the last valid second
    ('namespaces="kepler",valid-before="20260615115959Z"', AT, False),   # expired
    ('namespaces="kepler",valid-after="20260615120000Z"', AT, True),     # the first valid second
    ('namespaces="kepler",valid-after="20260615120001Z"', AT, False),    # not yet valid
    ('namespaces="kepler",valid-before="202606152100"', AT, True),       # Tokyo's 21:00 is 12:00Z
    ('namespaces="kepler",valid-before="202606152059"', AT, False),      # ... not 11:59Z
    ('namespaces="kepler",valid-after="20260616"', AT, False),           # midnight in Tokyo
    ('valid-after="20260101",valid-before="20261231",namespaces="kepler"', AT, True),
    ('cert-authority,namespaces="kepler"', AT, False),  # a CA's key signs certificates only
    ('namespaces="kepler",valid-before="20200101"', None, False),  # expired by the clock
    ('namespaces="kepler",valid-after="20990101Z"', None, False),  # not yet, by the clock
])
def test_allowed_signers_options_agree_with_ssh_keygen(
        people, tokyo: None, tmp_path: Path, options: str, at: datetime | None, accepted: bool) -> None:
    keys, _ = people
    line = f'alice {options} {keys["alice"].with_suffix(".pub").read_text().strip()}'
    signed = sign(statement(), keys["alice"])
    assert ssh_keygen_verifies(line, signed, tmp_path, at) is accepted
    problem = kepler_verifies(line, signed, at)
    assert (problem == "") is accepted, problem
    if "valid-before" in options and not accepted:
        assert "alice is expired at" in problem and "(valid-before)" in problem
    if "valid-after" in options and not accepted:
        assert "alice is not valid before" in problem and "(valid-after)" in problem
    if "cert-authority" in options:
        assert "not listed for kepler" in problem


def test_a_certificate_signature_is_refused_even_where_ssh_keygen_takes_it(people, tmp_path: Path) -> None:
    """A key certified by a listed cert-authority verifies for ssh-keygen; Kepler takes no
    certificates and says so (it never accepts what ssh-keygen refuses, and refuses this)."""
    keys, _ = people
    ca = tmp_path / "ca"
    generate_key(ca, "ca")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "alice", "-n", "alice",
                    str(keys["alice"].with_suffix(".pub"))], check=True, capture_output=True)
    cert = keys["alice"].parent / "alice-cert.pub"
    line = f'alice cert-authority,namespaces="kepler" {ca.with_suffix(".pub").read_text().strip()}'
    try:
        signed = sign(statement(), cert)
    finally:
        cert.unlink()
    assert ssh_keygen_verifies(line, signed, tmp_path, None)
    with pytest.raises(InvalidStatement, match="made with an SSH certificate; Kepler verifies plain keys"):
        verify(signed, AllowedSigners.parse(line + "\n"))


def test_a_bad_validity_time_names_the_line() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(ValueError, match=r"signers:1: valid-after/valid-before: '2026-01-01' is not "
                                         r"YYYYMMDD\[HHMM\[SS\]\]\[Z\]"):
        AllowedSigners.parse(f'alice namespaces="kepler",valid-before="2026-01-01" {key}\n', "signers")


def test_a_statement_without_nonce_keeps_the_bytes_signed_before_nonces_existed(people) -> None:
    """Old signatures (tests/histories/) must still verify on replay: an empty nonce is
    left out of the canonical bytes; a set one is covered by the signature."""
    keys, signers = people
    old = statement()
    assert b"nonce" not in old.canonical()
    fresh = statement(nonce="0" * 32)
    signed = sign(fresh, keys["alice"])
    forged = SignedStatement(statement=statement(nonce="1" * 32), signature=signed.signature)
    with pytest.raises(InvalidStatement, match="does not verify"):
        verify(forged, signers, WHEN)


@pytest.mark.parametrize("value,message", [
    ("48h", "identity.request_valid_for: Input should be less than or equal to 1 day"),
    ("30s", "identity.request_valid_for: Input should be greater than or equal to 1 minute"),
])
def test_request_valid_for_is_bounded_when_kepler_yaml_is_read(value: str, message: str) -> None:
    from kepler.settings import ConfigError, parse_platform

    text = (Path(__file__).resolve().parent.parent / "kepler.yaml").read_text()
    with pytest.raises(ConfigError, match=message):
        parse_platform(text.replace("\nidentity:\n", f"\nidentity:\n  request_valid_for: {value}\n"),
                       "kepler.yaml")
