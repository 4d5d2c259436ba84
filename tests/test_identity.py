"""Signed statements: keys made and signatures written by the real ssh-keygen, verified by
kepler/identity.py (the sshsig library) against an allowed-signers file."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

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
