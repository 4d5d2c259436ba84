"""Steering a canary from the console with a passkey, in a real headless Chromium: the
canary page's charts fill in as the canary runs, Pause is signed by the approver's passkey
and verified by the workflow, Abort sends traffic back to stable."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from playwright.async_api import expect

from tests.console.browser import People, browser, people  # noqa: F401 (fixtures)
from tests.console.conftest import ConsoleServer
from tests.e2e.test_release import kepler, wait_for_outcome

pytestmark = pytest.mark.e2e
SERVICE = "shop-basket"


async def test_an_approver_pauses_and_aborts_a_canary_with_a_passkey(
        console: ConsoleServer, people: People, tmp_path: Path) -> None:  # noqa: F811
    cfg = console.platform_file
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": SERVICE, "team": "basket", "replicas": 1}))
    for args in (("service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"),
                 ("release", SERVICE, "--env", "staging", "--ref", "main", "--watch"),
                 ("canary", SERVICE, "--env", "staging", "--ref", "main", "--steps", "20,50,80",
                  "--interval", "10s")):
        code, out, err = await kepler(cfg, *args)
        assert code == 0, out + err
    carol = await people("carol")  # the canary's requester may pause it
    await carol.enroll()
    await carol.sign_in(f"/services/{SERVICE}/staging/canary")
    page = carol.page
    await expect(page.locator("#live")).to_contain_text("50% · step 2 of 3", timeout=60_000)
    await expect(page.locator("svg.chart").first).to_be_visible()
    await page.fill("input[name=comment]", "watching the error budget")
    await page.click("button[data-action=pause]")
    await expect(page.locator("#result")).to_contain_text("paused at 50%")
    await expect(page.locator("button[data-action=resume]")).to_be_visible()  # live: now paused
    await carol.screenshot("canary")
    await page.click("button[data-action=abort]")
    await expect(page.locator("#result")).to_contain_text("aborting")
    status = await wait_for_outcome(cfg, SERVICE, "staging")
    assert status["outcome"] in ("aborted", "rolled_back"), status
    assert any("paused by carol" in note for note in status["notes"]), status["notes"]
