"""Signing statements with the caller's SSH key (kepler/identity.py verifies them).

`ssh-keygen -Y sign` does the signing: it reads the private key, or asks ssh-agent when
given a public key whose private half the agent holds; passphrases and hardware keys
work as they do for git. The key is `KEPLER_SIGNING_KEY`, else ~/.ssh/id_ed25519."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client
from temporalio.service import RPCError

from kepler import naming

from kepler.clients import operations as operations_client
from kepler.identity import DELEGATE, PERSON, SYSTEM, SigningError, sign  # re-exported for the CLI
from kepler.models import ApprovalDecision
from kepler.schedules import schedule_id
from kepler.settings import Platform

T = TypeVar("T")

SANDBOX_USER = "dev"  # who acts in the sandbox unless --as or KEPLER_USER says otherwise


def default_key() -> Path:
    return Path(os.environ.get("KEPLER_SIGNING_KEY") or Path.home() / ".ssh" / "id_ed25519")


def public_key(key: Path) -> str:
    """`TYPE BASE64` of `key`: the file itself when it is a public key (its private half in
    ssh-agent), else KEY.pub beside it, else read from a private key without passphrase."""
    if not key.exists():
        raise SigningError(f"signing key {key} not found (KEPLER_SIGNING_KEY names it)")
    candidates = [key] + ([key.with_name(key.name + ".pub")] if key.suffix != ".pub" else [])
    for path in candidates:
        try:
            words = path.read_text(errors="replace").split()
        except OSError:
            continue
        if len(words) >= 2 and words[0].startswith(("ssh-", "ecdsa-", "sk-")):
            return f"{words[0]} {words[1]}"
    done = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", str(key)], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30, check=False)
    words = done.stdout.decode(errors="replace").split()
    if done.returncode != 0 or len(words) < 2:
        raise SigningError(f"cannot read the public half of {key}: put it beside it as "
                           f"{key.name}.pub, or point KEPLER_SIGNING_KEY at the .pub file")
    return f"{words[0]} {words[1]}"


def key_owner(p: Platform, chosen: str | None) -> str:
    """Who the caller is, from their key as git has it: the person identity.allowed_signers
    lists for the key they sign with. `chosen` (KEPLER_USER) only picks among several
    people listed for that key, and is refused when the key is not theirs."""
    key = default_key()
    mine = public_key(key)
    listed = sorted({s.principal for s in p.identity.signers().signers
                     if PERSON in s.namespaces and not s.cert_authority and s.key == mine})
    source = (str(p.identity.path(p.identity.allowed_signers)) if p.identity.allowed_signers
              else "the allowed signers (identity.allowed_signers is not set)")
    if not listed:
        raise SigningError(f"your key {key} is not listed for a person (namespaces=\"{PERSON}\") "
                           f"in {source}: ask a platform admin to add it, or set "
                           "KEPLER_SIGNING_KEY to the key that is")
    if chosen and chosen not in listed:
        raise SigningError(f"KEPLER_USER={chosen}, but your key {key} is listed for "
                           f"{', '.join(listed)}, not {chosen}: sign with {chosen}'s key "
                           "(KEPLER_SIGNING_KEY) or unset KEPLER_USER")
    if chosen:
        return chosen
    if len(listed) > 1:
        raise SigningError(f"your key {key} is listed for {', '.join(listed)}: set KEPLER_USER "
                           "to the one acting")
    return listed[0]


def signing_key(p: Platform, name: str) -> Path:
    """The key `name` signs with: in the sandbox, its key under identity.sandbox_keys;
    elsewhere the caller's own (KEPLER_SIGNING_KEY, else ~/.ssh/id_ed25519)."""
    if p.identity.sandbox_keys:
        return p.identity.path(p.identity.sandbox_keys) / name
    return default_key()


def now() -> datetime:
    return datetime.now(timezone.utc)


def sign_request(p: Platform, req: T, key: Path | None = None, namespace: str = PERSON,
                 on_behalf_of: str = "", at: datetime | None = None,
                 for_schedule: bool = False) -> T:
    """`req` with its requester's signature over exactly its content, signed now (`at`:
    a test's clock) with a fresh nonce: it starts one run, within identity.request_valid_for.
    `for_schedule`: a release schedule's, signed for the schedule's id, for every fire."""
    statement = operations_client.request_statement(req, at or now())
    if for_schedule:
        statement = statement.model_copy(update={"workflow_id": schedule_id(
            getattr(req, "service"), getattr(req, "env"))})
    if on_behalf_of:
        statement = statement.model_copy(update={"on_behalf_of": on_behalf_of})
    signed = sign(statement, key or signing_key(p, getattr(req, "requested_by")), namespace)
    return req.model_copy(update={"signed": signed})  # type: ignore[attr-defined]


async def decide(client: Client, p: Platform, service: str, env: str, verdict: str,
                 approver: str, comment: str = "", key: Path | None = None,
                 namespace: str = PERSON, on_behalf_of: str = "", run_id: str = "") -> str:
    """Approve or reject what is pending on `<service>@<env>` now (or only if it is the
    run `run_id`, e.g. a chat button's), signed: the statement names that run, its
    digests and commits, so it approves nothing else."""
    workflow_id = naming.workflow_id(service, env)
    try:
        state = await operations_client.status(client, workflow_id)
    except RPCError as e:
        raise operations_client.Refused(f"{workflow_id}: nothing to {verdict} "
                                        f"({e.message})") from None
    statement = operations_client.approval_statement(state, verdict, comment, now())
    if run_id and statement.run_id != run_id:
        raise operations_client.Refused(
            f"this {verdict} was for run {run_id} of {statement.workflow_id}; the approval "
            f"pending now is for run {statement.run_id} ({state.version}): decide on that one")
    if on_behalf_of:
        statement = statement.model_copy(update={"on_behalf_of": on_behalf_of})
    signed = await asyncio.to_thread(sign, statement, key or signing_key(p, approver), namespace)
    return await operations_client.decide(client, service, env, verdict, ApprovalDecision(
        approver=approver, comment=comment, signed=signed))


def generate_key(path: Path, comment: str) -> Path:
    """A new ed25519 key without passphrase (the sandbox's people); the public key path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub")


# The sandbox's people (issue 18): who `kepler dev up` makes keys for, and what each may sign.
SANDBOX_SIGNERS = {"dev": PERSON, "alice": PERSON, "bob": PERSON, "carol": PERSON,
                   "chatops": DELEGATE, "alerts": SYSTEM, "promotions": SYSTEM}


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
