"""What a passkey cannot be made to approve: assertions made by a real browser's passkey
(Chromium's virtual authenticator), sent straight to the workflow as anyone who may send
updates could — forged, for another digest, for another run, replayed at a later run —
are refused by the workflow itself, naming the rule, with nothing changed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from kepler.clients import operations as operations_client
from kepler.identity import SignedStatement, Statement
from kepler.models import ApprovalDecision
from kepler.passkeys import PasskeyAssertion, b64url, unb64url
from tests import world
from tests.console.browser import People, browser, people  # noqa: F401 (fixtures)
from tests.console.conftest import ConsoleServer
from tests.console.test_browser_approvals import (
    awaiting_prod_approval, commit_change, created_and_staged,
)
from tests.e2e.test_release import kepler, wait_for_outcome
from tests.helpers import keep_history

pytestmark = pytest.mark.e2e
SERVICE = "pay-fraud"


async def approve(client: Any, statement: Statement, assertion: PasskeyAssertion) -> str:
    return await operations_client.decide(client, SERVICE, "prod", "approve", ApprovalDecision(
        approver="alice", signed=SignedStatement(statement=statement, passkey=assertion)))


async def refused(client: Any, statement: Statement, assertion: PasskeyAssertion, rule: str) -> None:
    with pytest.raises(operations_client.Refused, match=rule):
        await approve(client, statement, assertion)


async def gate(client: Any) -> Statement:
    state = await operations_client.status(client, f"{SERVICE}@prod")
    assert state.pending_approval is not None and state.pending_approval.approvals == []
    return operations_client.approval_statement(state, "approve", "", datetime.now(timezone.utc))


async def test_forged_other_digest_other_run_and_replayed_assertions_change_nothing(
        console: ConsoleServer, people: People, sandbox: Any, dev_env: Any,  # noqa: F811
        tmp_path: Path) -> None:
    client = dev_env.client
    await created_and_staged(console, tmp_path, SERVICE)
    await awaiting_prod_approval(console, SERVICE)
    alice = await people("alice")
    await alice.enroll()
    await alice.sign_in()
    before = world.snapshot(sandbox, [f"{SERVICE}-prod"])
    statement = await gate(client)
    good = await alice.sign(statement)

    signature = bytearray(unb64url(good.signature))
    signature[-1] ^= 1
    await refused(client, statement, good.model_copy(update={"signature": b64url(bytes(signature))}),
                  "passkey: .*signature")
    other_digest = statement.model_copy(update={"digests": [
        statement.digests[0].split("@")[0] + "@sha256:" + "0" * 64]})
    await refused(client, other_digest, await alice.sign(other_digest), "names digests")
    other_run = statement.model_copy(update={"run_id": "0" * 36})
    await refused(client, other_run, await alice.sign(other_run), "not for run")
    await refused(client, other_run, good, "passkey: .*challenge")  # a real assertion, relabelled
    await gate(client)  # still waiting, with no approval
    assert world.differences(before, world.snapshot(sandbox, [f"{SERVICE}-prod"])) == []

    assert await approve(client, statement, good) == "approved"
    assert (await wait_for_outcome(console.platform_file, SERVICE, "prod"))["outcome"] == "succeeded"
    # replay material: refused updates, the signers read again for a new passkey, approved
    await keep_history(client, "release-approved-by-passkey", f"{SERVICE}@prod")

    commit_change(sandbox, SERVICE, "Next change")
    code, out, err = await kepler(console.platform_file, "release", SERVICE, "--env", "staging",
                                  "--ref", "main", "--watch")
    assert code == 0, out + err
    await awaiting_prod_approval(console, SERVICE)
    after_first = world.snapshot(sandbox, [f"{SERVICE}-prod"])
    await refused(client, statement, good, "not for run")  # yesterday's approval, replayed
    await gate(client)
    assert world.differences(after_first, world.snapshot(sandbox, [f"{SERVICE}-prod"])) == []
