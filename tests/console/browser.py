"""People in a real headless Chromium (Debian's, driven by Playwright), each in a browser
context of their own with a virtual authenticator (Chrome DevTools' WebAuthn domain: a
platform authenticator that verifies its user), enrolling with the real CLI's link and
signing in with the passkey it made."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from kepler.identity import Statement
from kepler.passkeys import PasskeyAssertion, assertion_from_browser, authentication_options, challenge_of
from tests.console.conftest import ConsoleServer
from tests.e2e.test_release import kepler
from tests.helpers import require_binary

SCREENSHOTS = os.environ.get("KEPLER_SCREENSHOTS", "")  # a folder: the README's images


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    chromium = require_binary("chromium", "/usr/bin/chromium")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True,
                                                    args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Person:
    name: str
    context: BrowserContext
    page: Page
    console: ConsoleServer
    authenticator: str

    async def enroll(self) -> None:
        """`kepler console enroll` signs the link with their SSH key; the browser makes the passkey."""
        code, out, err = await kepler(self.console.platform_file, "console", "enroll", "--as",
                                      self.name, "-o", "json")
        assert code == 0, out + err
        await self.page.goto(json.loads(out)["link"])
        await self.page.click("#enroll")
        await expect(self.page.locator("#result")).to_contain_text(f"Passkey enrolled for {self.name}")

    async def sign_in(self, then: str = "/services") -> None:
        await self.page.goto(f"/login?next={quote(then)}")
        await self.page.click("#signin")
        await self.page.wait_for_url(lambda url: urlsplit(url).path == then)

    async def sign(self, statement: Statement) -> PasskeyAssertion:
        """This browser's passkey asserting `statement` (the challenge the console would ask)."""
        rp = self.console.platform.console.relying_party()
        assert rp is not None
        options = authentication_options(rp.rp_id, challenge_of(statement.canonical()), [])
        credential = await self.page.evaluate(
            """async (options) => {
                 const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
                 return (await navigator.credentials.get({publicKey})).toJSON();
               }""", options)
        return assertion_from_browser(json.dumps(credential))

    async def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            await self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


People = Callable[[str], Awaitable["Person"]]


@pytest.fixture
async def people(browser: Browser, console: ConsoleServer) -> AsyncIterator[Callable[[str], Awaitable[Person]]]:
    """`await people("alice")`: a person in a browser context of their own, closed when the
    test ends (an open page keeps its live stream, and the console re-reading it, going)."""
    made: list[Person] = []

    async def make(name: str) -> Person:
        made.append(await person(browser, console, name))
        return made[-1]

    yield make
    for someone in made:
        await someone.context.close()


async def person(browser: Browser, console: ConsoleServer, name: str) -> Person:
    context = await browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}})
    return Person(name, context, page, console, added["authenticatorId"])
