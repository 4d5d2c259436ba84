"""Signing statements with the caller's SSH key (kepler/identity.py verifies them).

`ssh-keygen -Y sign` does the signing: it reads the private key, or asks ssh-agent when
given a public key whose private half the agent holds; passphrases and hardware keys
work as they do for git. The key is `KEPLER_SIGNING_KEY`, else ~/.ssh/id_ed25519."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kepler.identity import DELEGATE, PERSON, SYSTEM, SignedStatement, Statement

SIGN_TIMEOUT_S = 60  # an agent may ask for a touch or a passphrase


class SigningError(RuntimeError):
    pass


def default_key() -> Path:
    return Path(os.environ.get("KEPLER_SIGNING_KEY") or Path.home() / ".ssh" / "id_ed25519")


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


def generate_key(path: Path, comment: str) -> Path:
    """A new ed25519 key without passphrase (the sandbox's people); the public key path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub")


# The sandbox's people (issue 18): who `kepler dev up` makes keys for, and what each may sign.
SANDBOX_SIGNERS = {"dev": PERSON, "alice": PERSON, "bob": PERSON, "carol": PERSON,
                   "chatops": DELEGATE, "alerts": SYSTEM}


def sandbox_signers(home: Path) -> Path:
    """Keys under `home/keys/NAME` for the sandbox's people (made once, kept), and the
    allowed-signers file naming them; its path."""
    lines = ["# The sandbox's signers, written by `kepler dev up`: NAME namespaces=ROLE KEY"]
    for name, namespace in SANDBOX_SIGNERS.items():
        public = generate_key(home / "keys" / name, f"{name}@kepler-sandbox").read_text().split()
        lines.append(f'{name} namespaces="{namespace}" {public[0]} {public[1]}')
    path = home / "allowed_signers"
    path.write_text("\n".join(lines) + "\n")
    return path
