"""Passkeys as signers (kepler/passkeys.py, kepler/identity.py, kepler/enrolment.py): an
assertion of exactly a statement, verified with no I/O against a passkey whose enrolment
the person's SSH key signed; everything else refused with the rule named."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from kepler.enrolment import (
    check_fresh_enrolment, enrolment_statement, read_entries, verified_passkeys,
)
from kepler.identity import (
    AllowedSigners, InvalidStatement, RelyingParty, SignedStatement, Statement, sign, verify,
)
from kepler.settings import load_platform
from tests.passkey_device import ORIGIN, RP, SoftPasskey, key_of

PARTY = RelyingParty(rp_id=RP, origins=[ORIGIN])
NOW = datetime.now(timezone.utc)
STATEMENT = Statement(action="approve", operation="release", service="shop", env="prod",
                      workflow_id="shop@prod", run_id="r1", digests=["reg/shop@sha256:" + "a" * 64],
                      issued_at=NOW)


def ssh_signers() -> AllowedSigners:
    return AllowedSigners.parse((Path(os.environ["KEPLER_HOME"]) / "allowed_signers").read_text())


def signers_with(*devices: SoftPasskey) -> AllowedSigners:
    signers = ssh_signers()
    kept, problems = verified_passkeys([d.entry() for d in devices], signers, PARTY, NOW)
    assert not problems
    return signers.model_copy(update={"passkeys": kept, "relying_party": PARTY})


def test_a_passkey_signs_exactly_its_statement_as_its_person() -> None:
    alice = SoftPasskey("alice")
    who = verify(alice.sign(STATEMENT), signers_with(alice))
    assert (who.name, who.kind, who.via) == ("alice", "person", "")


@pytest.mark.parametrize("change, rule", [
    ({"statement": STATEMENT.model_copy(update={"run_id": "r2"})}, "challenge"),
    ({"rp": "evil.example"}, "RP ID"),
    ({"origin": "https://evil.example"}, "origin"),
    ({"flags": 0x01}, "verif"),  # user present, not verified
    ({"kind": "webauthn.create"}, "type"),
])
def test_another_statement_origin_or_an_unverified_user_is_refused(change: dict, rule: str) -> None:
    alice = SoftPasskey("alice")
    assertion = alice.assertion(change.pop("statement", STATEMENT), **change)
    with pytest.raises(InvalidStatement, match=rf"(?i)passkey: .*{rule}"):
        verify(SignedStatement(statement=STATEMENT, passkey=assertion), signers_with(alice))


def test_a_forged_or_unenrolled_assertion_is_refused() -> None:
    alice, forger = SoftPasskey("alice"), SoftPasskey("alice")
    forger.credential_id = alice.credential_id  # alice's credential id, another key
    with pytest.raises(InvalidStatement, match="passkey: .*signature"):
        verify(forger.sign(STATEMENT), signers_with(alice))
    with pytest.raises(InvalidStatement, match="not enrolled"):
        verify(SoftPasskey("alice").sign(STATEMENT), signers_with(alice))


def test_a_passkey_signs_nothing_once_its_persons_ssh_key_is_gone() -> None:
    alice = SoftPasskey("alice")
    signers = signers_with(alice)
    signers.signers = [s for s in signers.signers if s.principal != "alice"]
    with pytest.raises(InvalidStatement, match="alice has no SSH key listed"):
        verify(alice.sign(STATEMENT), signers)


def test_a_passkey_never_vouches_enrols_or_signs_beside_an_ssh_signature() -> None:
    alice = SoftPasskey("alice")
    signers = signers_with(alice)
    vouching = STATEMENT.model_copy(update={"on_behalf_of": "bob via slack:U1"})
    with pytest.raises(InvalidStatement, match="on_behalf_of"):
        verify(alice.sign(vouching), signers)
    with pytest.raises(InvalidStatement, match="enrolled with an SSH key"):
        verify(alice.sign(enrolment_statement(RP, NOW)), signers)
    both = alice.sign(STATEMENT).model_copy(update={"signature": sign(STATEMENT, key_of("alice")).signature})
    with pytest.raises(InvalidStatement, match="not both"):
        verify(both, signers)


def test_only_enrolments_signed_by_the_person_for_this_console_count() -> None:
    signers = ssh_signers()
    good, by_bob, other_console = SoftPasskey("alice"), SoftPasskey("alice"), SoftPasskey("carol")
    request = Statement(action="request", operation="release", service="shop", env="prod",
                        issued_at=NOW, nonce="0" * 32)
    entries = [good.entry(), by_bob.entry(enrolled_by="bob"),
               other_console.entry(statement=enrolment_statement("evil.example", NOW)),
               SoftPasskey("dave").entry(statement=request)]
    stranger = SoftPasskey("mallory").entry()
    stranger.enrolment = sign(stranger.enrolment.statement, key_of("stranger"))
    kept, problems = verified_passkeys([*entries, stranger], signers, PARTY, NOW)
    assert [k.credential_id for k in kept] == [good.credential_id]
    assert "signed by bob, but the entry names alice" in problems[0]
    assert "another console" in problems[1]
    assert "enrols nothing" in problems[2]
    assert "is not listed for kepler" in problems[3]


def test_one_link_enrols_one_passkey_and_only_while_fresh() -> None:
    first, second = SoftPasskey("alice"), SoftPasskey("alice")
    entry = first.entry()
    twin = second.entry(statement=entry.enrolment.statement)  # the same link used twice
    kept, problems = verified_passkeys([entry, twin], ssh_signers(), PARTY, NOW)
    assert kept == [] and all("one link enrolled several" in p for p in problems)
    with pytest.raises(InvalidStatement, match="used already"):
        check_fresh_enrolment(entry.enrolment, [entry], NOW)
    signed_at = entry.enrolment.statement.issued_at
    with pytest.raises(InvalidStatement, match="valid for"):
        check_fresh_enrolment(entry.enrolment, [], signed_at + timedelta(minutes=16))
    check_fresh_enrolment(entry.enrolment, [], signed_at + timedelta(minutes=14))


def test_the_platform_reads_passkeys_only_with_a_console_url(tmp_path: Path) -> None:
    alice = SoftPasskey("alice").enrol(tmp_path / "passkeys")
    assert len(read_entries(tmp_path / "passkeys")) == 1
    config = yaml.safe_load((Path(__file__).parent.parent / "kepler.yaml").read_text())
    config["identity"]["passkeys"] = str(tmp_path / "passkeys")
    config["console"] = {"url": "http://localhost:8480"}
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    signers = load_platform(tmp_path / "kepler.yaml").signers()
    assert [k.person for k in signers.passkeys] == ["alice"]
    assert verify(alice.sign(STATEMENT), signers).name == "alice"
    del config["console"]
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidStatement, match="no console"):
        verify(alice.sign(STATEMENT), load_platform(tmp_path / "kepler.yaml").signers())
    config["console"] = {"url": "http://kepler.example.com"}
    (tmp_path / "kepler.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match="console.url: .*https only"):
        load_platform(tmp_path / "kepler.yaml")
