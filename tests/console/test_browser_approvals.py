"""Approving in the console, in a real headless Chromium with a passkey: sign in, see the
service, open the pending prod approval, approve, and watch the release finish on the page;
the workflow verified the passkey's assertion itself (the audit says: via the console)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import expect

from tests import world
from tests.console.browser import People, browser, people  # noqa: F401 (fixtures)
from tests.console.conftest import ConsoleServer
from tests.e2e.test_release import gitlab_client, kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e


def commit_change(sandbox: Any, service: str, title: str) -> str:
    """A new commit on main that changes the service's spec (replicas, an env var) and code."""
    project = gitlab_client(sandbox).projects.get(f"demo/{service}")
    spec = yaml.safe_load(project.files.raw(".kepler/service.yaml", ref="main"))
    spec.update(replicas=2, env={"FEATURE_FLAGS": "checkout-v2"})
    return project.commits.create({"branch": "main", "commit_message": title, "actions": [
        {"action": "update", "file_path": ".kepler/service.yaml", "content": yaml.safe_dump(spec)},
        {"action": "create", "file_path": "checkout_v2.py", "content": "ENABLED = True\n"}]}).id


async def created_and_staged(console: ConsoleServer, tmp_path: Path, name: str) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": name, "team": "payments",
                                                        "replicas": 1, "owners": ["carol"]}))
    for args in (("service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"),
                 ("release", name, "--env", "staging", "--ref", "main", "--watch")):
        code, out, err = await kepler(console.platform_file, *args)
        assert code == 0, out + err


async def awaiting_prod_approval(console: ConsoleServer, name: str) -> None:
    """A release of what staging runs to prod, waiting at its gate."""
    code, out, err = await kepler(console.platform_file, "release", name, "--env", "prod",
                                  "--from", "staging")
    assert code == 0, out + err
    await wait_for_stage(console.platform_file, name, "prod", "awaiting approval")


async def test_an_approver_signs_in_with_a_passkey_and_approves_a_prod_release(
        console: ConsoleServer, people: People, sandbox: Any, tmp_path: Path) -> None:  # noqa: F811
    await created_and_staged(console, tmp_path, "pay-ledger")
    await awaiting_prod_approval(console, "pay-ledger")

    alice = await people("alice")
    await alice.enroll()
    await alice.sign_in()
    page = alice.page
    await expect(page.locator("table.services")).to_contain_text("pay-ledger")
    await expect(page.locator("table.running")).to_contain_text("awaiting approval")
    await page.click("table.running >> text=awaiting approval")
    await page.wait_for_url("**/services/pay-ledger/prod/approval")
    await expect(page.locator("code.digest")).to_contain_text("@sha256:")
    await expect(page.locator("section.card")).to_contain_text("Requested by carol")

    await page.fill("input[name=comment]", "LGTM from the console")
    await page.click("button[data-action=approve]")
    await expect(page.locator("#result")).to_have_text("approved")
    # the page follows the release to its end (server-sent events re-render it)
    await expect(page.locator(".outcome")).to_have_text("succeeded", timeout=120_000)

    code, out, err = await kepler(console.platform_file, "audit", "pay-ledger", "--env", "prod", "-o", "json")
    assert code == 0, out + err
    (decision,) = json.loads(out)[0]["decisions"]
    assert (decision["who"], decision["verified"], decision["channel"], decision["comment"]) == (
        "alice", True, "console", "LGTM from the console")

    # the next release: the page shows the commits since what is live and the config diff
    sha = commit_change(sandbox, "pay-ledger", "Checkout v2 behind a flag")
    for args in (("release", "pay-ledger", "--env", "staging", "--ref", "main", "--watch"),
                 ("release", "pay-ledger", "--env", "prod", "--from", "staging")):
        code, out, err = await kepler(console.platform_file, *args)
        assert code == 0, out + err
    await wait_for_stage(console.platform_file, "pay-ledger", "prod", "awaiting approval")
    await page.goto("/services/pay-ledger/prod/approval")
    await expect(page.locator("ol.commits")).to_contain_text(f"{sha[:12]} Checkout v2 behind a flag")
    await expect(page.locator("pre.diff").first).to_contain_text("+replicas: 2")
    await expect(page.locator("pre.diff").first).to_contain_text("FEATURE_FLAGS: checkout-v2")
    await alice.screenshot("approval")
    await page.click("button[data-action=approve]")
    await expect(page.locator("#result")).to_have_text("approved")
    await expect(page.locator(".outcome")).to_have_text("succeeded", timeout=120_000)
    await page.goto("/services/pay-ledger")
    await expect(page.locator("main")).to_contain_text(sha[:8])  # live in prod now
    await alice.screenshot("service")


async def test_a_reject_in_the_browser_ends_the_release_with_nothing_changed(
        console: ConsoleServer, people: People, sandbox: Any, tmp_path: Path) -> None:  # noqa: F811
    await created_and_staged(console, tmp_path, "pay-refunds")
    before = world.snapshot(sandbox, ["pay-refunds-prod"])
    await awaiting_prod_approval(console, "pay-refunds")
    bob = await people("bob")
    await bob.enroll()
    await bob.sign_in("/services/pay-refunds/prod/approval")
    await bob.page.fill("input[name=comment]", "not during the sale")
    await bob.page.click("button[data-action=reject]")
    await expect(bob.page.locator("#result")).to_have_text("rejected")
    await expect(bob.page.locator(".outcome")).to_have_text("rejected")
    status = await wait_for_outcome(console.platform_file, "pay-refunds", "prod")
    assert status["outcome"] == "rejected" and "not during the sale" in status["error"]
    assert world.differences(before, world.snapshot(sandbox, ["pay-refunds-prod"])) == []


async def test_a_break_glass_release_waits_for_a_second_approver_in_the_browser(
        console: ConsoleServer, people: People, sandbox: Any, tmp_path: Path) -> None:  # noqa: F811
    await created_and_staged(console, tmp_path, "pay-hotfix")
    commit_change(sandbox, "pay-hotfix", "Hotfix straight to prod")  # staging never ran it
    code, out, err = await kepler(console.platform_file, "release", "pay-hotfix", "--env", "prod",
                                  "--ref", "main", "--break-glass", "--reason", "hotfix 12")
    assert code == 0, out + err
    await wait_for_stage(console.platform_file, "pay-hotfix", "prod", "awaiting approval")
    alice, bob = await people("alice"), await people("bob")
    for approver in (alice, bob):
        await approver.enroll()
        await approver.sign_in("/services/pay-hotfix/prod/approval")
    await expect(alice.page.locator("section.card")).to_contain_text("Needs 2 approvals")

    submitted: list[str] = []
    alice.page.on("request", lambda r: submitted.append(r.post_data or "")
                  if r.url.endswith("/actions/submit") else None)
    await alice.page.click("button[data-action=approve]")
    await expect(alice.page.locator("#result")).to_have_text("approval recorded (1 of 2)")
    await expect(bob.page.locator(".approvals")).to_have_text("1 of 2")  # live on bob's page

    # alice's assertion again (replayed through her session): the workflow counts her once
    again = await alice.page.evaluate(
        """async (body) => {
             const r = await fetch("/actions/submit", {method: "POST", body,
               headers: {"Content-Type": "application/json",
                         "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}});
             return [r.status, (await r.json()).error];
           }""", submitted[0])
    assert again[0] == 409 and "alice has already approved" in again[1]
    await expect(bob.page.locator(".approvals")).to_have_text("1 of 2")

    await bob.page.click("button[data-action=approve]")
    await expect(bob.page.locator("#result")).to_have_text("approved")
    await expect(bob.page.locator(".outcome")).to_have_text("succeeded", timeout=120_000)
    status = await wait_for_outcome(console.platform_file, "pay-hotfix", "prod")
    assert [a["approver"] for a in status["approvals"]] == ["alice", "bob"]


async def test_a_service_is_created_from_the_console_as_a_signed_request(
        console: ConsoleServer, people: People) -> None:  # noqa: F811
    dev = await people("dev")
    await dev.enroll()
    await dev.sign_in("/create")
    page = dev.page
    await page.fill("input[name=name]", "Bad_Name")
    await page.fill("input[name=team]", "growth")
    await page.evaluate("document.querySelector('input[name=name]').removeAttribute('pattern')")
    await page.click("#create-service button[type=submit]")
    await expect(page.locator("#result")).to_contain_text("name:")  # the CLI's rule, named
    await page.fill("input[name=name]", "growth-signup")
    await page.fill("input[name=owners]", "dev, carol")
    await page.fill("input[name=replicas]", "1")
    await page.click("#create-service button[type=submit]")
    await expect(page.locator("#result")).to_have_text("started growth-signup@all")
    status = await wait_for_outcome(console.platform_file, "growth-signup", "all")
    assert status["outcome"] == "succeeded" and status["requested_by"] == "dev"
    assert status["requester_verified"] is True
    code, out, _ = await kepler(console.platform_file, "service", "list", "-o", "json")
    assert "growth-signup" in json.loads(out)
