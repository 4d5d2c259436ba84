"""Who acts, with a real platform file (no identity.sandbox_keys), follows from the key one
signs with, as git has it (issue 32): the person the allowed signers list for that key;
KEPLER_USER only chooses among several listed for it. Every mismatch is refused with exit 2,
naming the key, before anything starts (Temporal here listens nowhere: nothing could)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kepler.identity_settings import kepler_home
from starter.cli import app as kepler_app
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
# identity passed when the command gets as far as the service name (exit 2 naming it)
PAST_IDENTITY = ["release", "Not_A_Name", "--env", "staging", "--ref", "main"]


@pytest.fixture
def real_platform(tmp_path: Path) -> Path:
    """The shipped kepler.yaml as a real platform has it: people sign with their own key."""
    config = yaml.safe_load((ROOT / "kepler.yaml").read_text())
    del config["identity"]["sandbox_keys"]
    config["temporal"]["address"] = f"127.0.0.1:{free_port()}"
    path = tmp_path / "kepler.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def key(name: str) -> Path:
    return kepler_home() / "keys" / name  # tests/conftest.py made them and listed them


def kepler(platform: Path, *args: str, **env: str) -> tuple[int, str]:
    done = CliRunner().invoke(kepler_app, list(args), env={
        "KEPLER_CONFIG": str(platform), "KEPLER_USER": None, "COLUMNS": "300", **env})
    return done.exit_code, done.output


def test_you_are_the_person_listed_for_your_key(real_platform: Path) -> None:
    code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(key("carol")))
    assert code == 2 and "service:" in out and "DNS-1035" in out, out
    code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(key("carol")),
                       KEPLER_USER="carol")
    assert code == 2 and "service:" in out, out


def test_the_public_half_is_found_as_git_finds_it(real_platform: Path, tmp_path: Path) -> None:
    """The .pub beside the key, the public key itself (its private half in an agent), or a
    private key without passphrase alone."""
    public = tmp_path / "mine.pub"
    shutil.copy(key("carol").with_name("carol.pub"), public)
    alone = tmp_path / "alone"
    shutil.copy(key("carol"), alone)
    alone.chmod(0o600)
    for path in (public, alone):
        code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(path))
        assert code == 2 and "service:" in out, (path, out)


@pytest.mark.parametrize("signing_key,user,refusal", [
    ("carol", "alice", "KEPLER_USER=alice, but your key {key} is listed for carol, not alice"),
    ("stranger", None, "your key {key} is not listed for a person (namespaces=\"kepler\")"),
    ("chatops", None, "your key {key} is not listed for a person"),  # a delegate's key
    ("nobody-has-this-key", None, "signing key {key} not found (KEPLER_SIGNING_KEY names it)"),
])
def test_a_key_that_is_not_yours_is_refused_with_exit_2(
        real_platform: Path, signing_key: str, user: str | None, refusal: str) -> None:
    code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(key(signing_key)),
                       KEPLER_USER=user)  # type: ignore[arg-type]
    assert code == 2, out
    assert refusal.format(key=key(signing_key)) in " ".join(out.split()), out
    assert "service:" not in out  # refused before the request was even built


def test_as_is_the_sandboxs_only(real_platform: Path) -> None:
    code, out = kepler(real_platform, *PAST_IDENTITY, "--as", "alice",
                       KEPLER_SIGNING_KEY=str(key("carol")))
    assert code == 2 and "--as: only the sandbox picks a key by name" in out, out


def test_kepler_user_chooses_among_several_people_listed_for_one_key(
        real_platform: Path, tmp_path: Path) -> None:
    shared = key("carol").with_name("carol.pub").read_text().split()
    signers = tmp_path / "allowed_signers"
    signers.write_text((kepler_home() / "allowed_signers").read_text()
                       + f'carol2 namespaces="kepler" {shared[0]} {shared[1]}\n')
    config = yaml.safe_load(real_platform.read_text())
    config["identity"]["allowed_signers"] = str(signers)
    real_platform.write_text(yaml.safe_dump(config))
    code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(key("carol")))
    assert code == 2 and "is listed for carol, carol2: set KEPLER_USER" in " ".join(out.split()), out
    code, out = kepler(real_platform, *PAST_IDENTITY, KEPLER_SIGNING_KEY=str(key("carol")),
                       KEPLER_USER="carol2")
    assert code == 2 and "service:" in out, out


def test_in_the_sandbox_dev_acts_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped kepler.yaml (identity.sandbox_keys): no KEPLER_USER needed."""
    from kepler.settings import load_platform
    from starter import session

    platform = load_platform(ROOT / "kepler.yaml")
    monkeypatch.delenv("KEPLER_USER", raising=False)
    assert session.acting_user(platform, None) == "dev"
    assert session.acting_user(platform, "alice") == "alice"
    monkeypatch.setenv("KEPLER_USER", "bob")
    assert session.acting_user(platform, None) == "bob"
