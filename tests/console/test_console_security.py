"""The console holds no authority: a session cookie reads and never approves, a trusted SSO
header reads only, every POST needs the console's Origin and the session's CSRF token and
is bounded, tokens cannot be forged or moved between people, a sign-in is used once, and
every page is served under a strict Content-Security-Policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from kepler.clients import operations as operations_client
from kepler.clients.temporal import LazyClient
from kepler.enrolment import append_entry
from kepler.identity import SignedStatement, sign
from kepler.passkeys import b64url, unb64url
from kepler.settings import Secrets
from starter.console import console_app
from tests import world
from tests.console.conftest import SECRET, ConsoleServer
from tests.console.test_browser_approvals import awaiting_prod_approval, created_and_staged
from tests.e2e.test_release import kepler
from tests.passkey_device import SoftPasskey, key_of

pytestmark = pytest.mark.e2e


async def test_a_session_cookie_reads_but_cannot_approve(
        console: ConsoleServer, sandbox: Any, dev_env: Any, tmp_path: Path) -> None:
    await created_and_staged(console, tmp_path, "pay-payouts")
    await awaiting_prod_approval(console, "pay-payouts")
    before = world.snapshot(sandbox, ["pay-payouts-prod"])
    async with console.poster("alice") as stolen:  # alice's cookie, in someone else's hands
        assert (await stolen.get("/services/pay-payouts/prod/approval")).status_code == 200
        prepared = (await stolen.post("/actions/prepare", json={
            "action": "approve", "service": "pay-payouts", "env": "prod"})).json()
        challenge = unb64url(prepared["options"]["challenge"])
        mallory = SoftPasskey("alice")  # a key of the thief's own, never enrolled
        refused = await stolen.post("/actions/submit", json={
            "token": prepared["token"],
            "credential": mallory.browser_json(mallory.assert_challenge(challenge))})
        assert refused.status_code == 409 and "not enrolled" in refused.json()["error"]
        garbage = await stolen.post("/actions/submit", json={"token": prepared["token"],
                                                              "credential": {"id": "x"}})
        assert garbage.status_code == 400 and "not a WebAuthn assertion" in garbage.json()["error"]
    state = await operations_client.status(dev_env.client, "pay-payouts@prod")
    assert state.pending_approval is not None and state.pending_approval.approvals == []
    assert world.differences(before, world.snapshot(sandbox, ["pay-payouts-prod"])) == []


async def test_posts_need_origin_csrf_and_a_bounded_body_and_tokens_cannot_be_forged(
        console: ConsoleServer) -> None:
    body = {"action": "approve", "service": "pay-payouts", "env": "prod"}
    async with console.poster("bob") as bob:
        no_csrf = await bob.post("/actions/prepare", json=body, headers={"X-CSRF-Token": ""})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
        elsewhere = await bob.post("/actions/prepare", json=body,
                                   headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403 and "origin" in elsewhere.json()["error"]
        huge = await bob.post("/actions/prepare", content=b"{" + b" " * 70_000 + b"}",
                              headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        forged = await bob.post("/actions/submit", json={"token": "e30.AAAA", "credential": {}})
        assert forged.status_code == 400 and "not made by this console" in forged.json()["error"]
        bad = await bob.post("/actions/prepare", json={**body, "service": "Not_A_Name"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("service:")
    async with console.poster("alice") as alice:
        token = console.tokens.make("action", {"action": "approve", "viewer": "bob"}, __import__(
            "datetime").timedelta(minutes=1))
        moved = await alice.post("/actions/submit", json={
            "token": token, "credential": SoftPasskey().browser_json(
                SoftPasskey().assert_challenge(b"x" * 32))})
        assert moved.status_code == 403 and "someone else's" in moved.json()["error"]


async def test_a_passkey_signs_in_once_per_challenge_with_a_strict_cookie(
        console: ConsoleServer) -> None:
    carol = SoftPasskey("carol", origin=console.url).enrol(console.passkeys)
    async with httpx.AsyncClient(base_url=console.url, headers={"Origin": console.url}) as browser:
        options = (await browser.post("/login/options", json={})).json()
        assertion = carol.browser_json(carol.assert_challenge(unb64url(options["options"]["challenge"])))
        signed_in = await browser.post("/login", json={"token": options["token"], "credential": assertion,
                                                       "next": "//evil.example"})
        assert signed_in.status_code == 200 and signed_in.json() == {"person": "carol", "next": "/"}
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # http: localhost
        page = await browser.get("/services")
        assert page.status_code == 200 and "carol" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        replayed = await browser.post("/login", json={"token": options["token"], "credential": assertion})
        assert replayed.status_code == 401 and "used already" in replayed.json()["error"]
        stranger = SoftPasskey("carol", origin=console.url)  # never enrolled
        options = (await browser.post("/login/options", json={})).json()
        refused = await browser.post("/login", json={"token": options["token"], "credential": stranger.browser_json(
            stranger.assert_challenge(unb64url(options["options"]["challenge"])))})
        assert refused.status_code == 401 and "not enrolled" in refused.json()["error"]


async def test_a_trusted_sso_header_reads_and_only_where_configured(
        console: ConsoleServer, dev_env: Any) -> None:
    async with httpx.AsyncClient(base_url=console.url) as anonymous:
        ignored = await anonymous.get("/services", headers={"X-Forwarded-User": "alice"})
        assert ignored.status_code == 303  # the session's console trusts no header
    platform = console.platform.model_copy(update={"console": console.platform.console.model_copy(
        update={"trusted_header": "X-Forwarded-User"})})
    app = console_app(platform, Secrets(console_secret=SecretStr(SECRET)),
                      client=LazyClient(None, dev_env.client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=console.url,
                                 headers={"X-Forwarded-User": "alice"}) as proxied:
        page = await proxied.get("/services")
        assert page.status_code == 200 and "alice <small>(sso)</small>" in page.text
        submit = await proxied.post("/actions/submit", json={}, headers={"Origin": console.url})
        assert submit.status_code == 403 and "CSRF" in submit.json()["error"]  # no session, no signing


async def test_an_enrolment_link_is_the_signers_own_and_works_once(console: ConsoleServer) -> None:
    code, out, err = await kepler(console.platform_file, "console", "enroll", "--as", "bob", "-o", "json")
    assert code == 0, out + err
    link = json.loads(out)["link"]
    assert link.startswith(f"{console.url}/enroll?link=")
    async with httpx.AsyncClient(base_url=console.url) as browser:
        page = await browser.get(link)
        assert page.status_code == 200 and "Create a passkey for bob" in page.text
        token = link.split("link=", 1)[1]
        signed = SignedStatement.model_validate_json(unb64url(token))
        stranger = sign(signed.statement, key_of("stranger"))  # the same statement, a key nobody listed
        refused = await browser.get("/enroll", params={"link": b64url(stranger.model_dump_json().encode())})
        assert refused.status_code == 403 and "is not listed for kepler" in refused.text
        damaged = await browser.get("/enroll", params={"link": token[:-8]})
        assert damaged.status_code == 400 and "damaged" in damaged.text
        # the link used: a passkey was enrolled with it, so it enrols nothing more
        append_entry(console.passkeys, SoftPasskey("bob", origin=console.url).entry(statement=signed.statement))
        used = await browser.get(link)
        assert used.status_code == 403 and "used already" in used.text
        options = await browser.post("/enroll/options", json={"link": token}, headers={"Origin": console.url})
        assert options.status_code == 403 and "used already" in options.json()["error"]
