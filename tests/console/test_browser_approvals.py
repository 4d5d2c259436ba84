"""Approving in the console, in a real headless Chromium with a passkey: sign in, see the
service, open the pending prod approval, approve, and watch the release finish on the page;
the workflow verified the passkey's assertion itself (the audit says: via the console)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, expect

from tests.console.browser import browser, person  # noqa: F401 (a fixture)
from tests.console.conftest import ConsoleServer
from tests.e2e.test_release import kepler, wait_for_stage

pytestmark = pytest.mark.e2e


async def created_and_staged(console: ConsoleServer, tmp_path: Path, name: str) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": name, "team": "payments",
                                                        "replicas": 1, "owners": ["carol"]}))
    for args in (("service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"),
                 ("release", name, "--env", "staging", "--ref", "main", "--watch")):
        code, out, err = await kepler(console.platform_file, *args)
        assert code == 0, out + err


async def test_an_approver_signs_in_with_a_passkey_and_approves_a_prod_release(
        console: ConsoleServer, browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    await created_and_staged(console, tmp_path, "ledger9")
    code, out, err = await kepler(console.platform_file, "release", "ledger9", "--env", "prod",
                                  "--from", "staging")
    assert code == 0, out + err
    await wait_for_stage(console.platform_file, "ledger9", "prod", "awaiting approval")

    alice = await person(browser, console, "alice")
    await alice.enroll()
    await alice.sign_in()
    page = alice.page
    await expect(page.locator("table.services")).to_contain_text("ledger9")
    await expect(page.locator("table.running")).to_contain_text("awaiting approval")
    await page.click("table.running >> text=awaiting approval")
    await page.wait_for_url("**/services/ledger9/prod/approval")
    await expect(page.locator("code.digest")).to_contain_text("@sha256:")
    await expect(page.locator("section.card")).to_contain_text("Requested by carol")
    await alice.screenshot("approval")

    await page.fill("input[name=comment]", "LGTM from the console")
    await page.click("button[data-action=approve]")
    await expect(page.locator("#result")).to_have_text("approved")
    # the page follows the release to its end (server-sent events re-render it)
    await expect(page.locator(".outcome")).to_have_text("succeeded", timeout=120_000)

    code, out, err = await kepler(console.platform_file, "audit", "ledger9", "--env", "prod", "-o", "json")
    assert code == 0, out + err
    (decision,) = json.loads(out)[0]["decisions"]
    assert (decision["who"], decision["verified"], decision["channel"], decision["comment"]) == (
        "alice", True, "console", "LGTM from the console")
