"""Signing in with a passkey, signing out, and enrolling a passkey with a link signed by
the person's SSH key (`kepler console enroll`, kepler/enrolment.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kepler.enrolment import (
    EnrolledPasskey, append_entry, check_enrolment, check_fresh_enrolment, read_entries,
)
from kepler.identity import AllowedSigners, InvalidStatement, RelyingParty, SignedStatement
from kepler.passkeys import (
    PasskeyError, assertion_from_browser, authentication_options, challenge_of, registration_options,
    unb64url, verify_assertion, verify_registration,
)
from kepler.settings import ConfigError
from starter.console.app import Console, Problem, json_body
from starter.console.auth import SESSION_COOKIE, BadToken

CHALLENGE_TTL = timedelta(minutes=5)


def relying_party(console: Console) -> RelyingParty:
    rp = console.platform.console.relying_party()
    if rp is None:
        raise Problem("the console has no console.url in kepler.yaml: passkeys need it", 503)
    return rp


def signers(console: Console) -> AllowedSigners:
    try:
        return console.platform.signers()
    except ConfigError as e:
        raise Problem(str(e), 503) from None


def safe_next(target: str) -> str:
    """Where to go after signing in: a path of this console only."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def routes(console: Console) -> list[BaseRoute]:
    async def login_page(request: Request) -> Response:
        return HTMLResponse(console.render("login.html", request, viewer=console.viewer(request),
                                           next=safe_next(request.query_params.get("next", "/"))))

    async def login_options(request: Request) -> Response:
        await json_body(request, console, csrf=False)
        rp = relying_party(console)
        challenge, token = console.tokens.challenge(CHALLENGE_TTL)
        return JSONResponse({"token": token,
                             "options": authentication_options(rp.rp_id, challenge, [])})

    async def login(request: Request) -> Response:
        body = await json_body(request, console, csrf=False)
        rp = relying_party(console)
        try:
            challenge = console.tokens.use_challenge(str(body.get("token", "")))
            assertion = assertion_from_browser(json.dumps(body.get("credential")))
        except (BadToken, PasskeyError) as e:
            raise Problem(f"sign-in: {e}", 401) from None
        known = signers(console)
        key = next((k for k in known.passkeys if k.credential_id == assertion.credential_id), None)
        if key is None:
            raise Problem("sign-in: this passkey is not enrolled (run `kepler console enroll`)", 401)
        try:
            verify_assertion(assertion, key.public_key, challenge, rp.rp_id, rp.origins)
        except PasskeyError as e:
            raise Problem(f"sign-in: {e}", 401) from None
        ttl = console.platform.console.session
        response = JSONResponse({"person": key.person, "next": safe_next(str(body.get("next", "/")))})
        response.set_cookie(SESSION_COOKIE, console.tokens.make("session", {"person": key.person}, ttl),
                            max_age=int(ttl.total_seconds()), httponly=True, samesite="strict",
                            secure=console.secure(), path="/")
        return response

    async def logout(request: Request) -> Response:
        await json_body(request, console)
        response = JSONResponse({"next": "/login"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def enrolment(link: str) -> tuple[SignedStatement, str, list[EnrolledPasskey]]:
        """The link's signed statement, whose it is, and the file's entries; Problem if the
        link does not enrol anyone now."""
        rp, known = relying_party(console), signers(console)
        path = console.platform.identity.passkeys
        if not path:
            raise Problem("identity.passkeys is not set in kepler.yaml: nowhere to enrol", 503)
        try:
            signed = SignedStatement.model_validate_json(unb64url(link))
        except (ValidationError, ValueError):
            raise Problem("enroll: the link is damaged (copy it whole)") from None
        try:
            entries = read_entries(console.platform.identity.path(path))
        except (OSError, ValueError) as e:
            raise Problem(f"identity.passkeys: {e}", 503) from None
        now = datetime.now(timezone.utc)
        try:
            person = check_enrolment(signed, known, rp, now)
            check_fresh_enrolment(signed, entries, now)
        except InvalidStatement as e:
            raise Problem(str(e), 403) from None
        return signed, person, entries

    async def enroll_page(request: Request) -> Response:
        link = request.query_params.get("link", "")
        signed, person, _ = enrolment(link)
        return HTMLResponse(console.render("enroll.html", request, viewer=console.viewer(request),
                                           person=person, link=link))

    async def enroll_options(request: Request) -> Response:
        body = await json_body(request, console, csrf=False)
        signed, person, entries = enrolment(str(body.get("link", "")))
        rp = relying_party(console)
        return JSONResponse({"options": registration_options(
            rp.rp_id, "Kepler", person, challenge_of(signed.statement.canonical()),
            [e.credential_id for e in entries if e.person == person])})

    async def enroll(request: Request) -> Response:
        body = await json_body(request, console, csrf=False)
        signed, person, _ = enrolment(str(body.get("link", "")))
        rp = relying_party(console)
        try:
            credential = verify_registration(json.dumps(body.get("credential")),
                                             challenge_of(signed.statement.canonical()),
                                             rp.rp_id, rp.origins)
        except PasskeyError as e:
            raise Problem(f"enroll: {e}", 403) from None
        path = console.platform.identity.path(console.platform.identity.passkeys or "")
        append_entry(path, EnrolledPasskey(person=person, enrolment=signed,
                                           enrolled_at=datetime.now(timezone.utc),
                                           **credential.model_dump()))
        return JSONResponse({"person": person, "next": "/login"})

    async def root_redirect(request: Request) -> Response:
        return RedirectResponse("/services", 303)

    return [Route("/", root_redirect), Route("/login", login_page),
            Route("/login/options", login_options, methods=["POST"]),
            Route("/login", login, methods=["POST"]), Route("/logout", logout, methods=["POST"]),
            Route("/enroll", enroll_page), Route("/enroll/options", enroll_options, methods=["POST"]),
            Route("/enroll", enroll, methods=["POST"])]
