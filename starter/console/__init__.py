"""`kepler console`: serve the console; `kepler console enroll`: a one-time link that
enrols a passkey, signed with your SSH key; `kepler console passkeys`: who has which."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer

from kepler.clients.temporal import LazyClient
from kepler.enrolment import enrolment_statement, read_entries
from kepler.identity import SigningError, sign
from kepler.passkeys import b64url
from kepler.settings import ConfigError, Platform, Secrets, home_secret
from starter import session, signing
from starter.cli_common import BAD_INPUT, OK, AsOpt, CliError, command, emit, subject_app


def console_app(p: Platform, secrets: Secrets | None = None, client: LazyClient | None = None):  # type: ignore[no-untyped-def]
    """The console's ASGI app for the platform `p`."""
    from starter.console import actions, signin  # the web stack: only when serving
    from starter.console.app import Console, build_app
    from starter.console.auth import Tokens
    from starter.console.views import ALL_PAGES
    from kepler.clients.gitlab import GitLabReader
    from starter.console.service_reads import clusters_of

    secrets = secrets or Secrets()
    key = (secrets.console_secret.get_secret_value().encode() if secrets.console_secret
           else home_secret("console"))
    console = Console(platform=p, client=client or LazyClient(p.temporal), tokens=Tokens(key),
                      pages=list(ALL_PAGES), clusters=clusters_of(p), gitlab=GitLabReader(p, secrets))
    return build_app(console, [*signin.routes(console), *actions.routes(console)])


def register(app: typer.Typer) -> None:
    console_cli = subject_app("The Kepler console: read and approve in a browser.")
    app.add_typer(console_cli, name="console")

    @command(console_cli, callback=True, invoke_without_command=True, output=False)
    def serve(listen: Optional[str] = typer.Option(None, "--listen", help=(
            "HOST:PORT to serve on (default: console.listen in kepler.yaml)"))) -> int:
        """Serve the console (console.url in kepler.yaml is where browsers reach it)."""
        import uvicorn

        p = session.platform()
        host, _, port = (listen or p.console.listen).rpartition(":")
        if not port.isdigit():
            raise CliError("--listen: HOST:PORT", BAD_INPUT)
        uvicorn.run(console_app(p), host=host.strip("[]"), port=int(port), log_level="warning")
        return OK

    @command(console_cli, "enroll")
    def enroll(as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Print a one-time link (15 minutes) that enrols a passkey for you at the console,
        signed with your SSH key; open it in the browser that keeps the passkey."""
        p = session.platform()
        rp = p.console.relying_party()
        if rp is None or p.console.url is None:
            raise CliError("console.url is not set in kepler.yaml: passkeys need it", BAD_INPUT)
        person = session.acting_user(p, as_user)
        statement = enrolment_statement(rp.rp_id, datetime.now(timezone.utc))
        try:
            signed = sign(statement, signing.signing_key(p, person))
        except SigningError as e:
            raise CliError(str(e), BAD_INPUT) from None
        link = f"{p.console.url}/enroll?link={b64url(signed.model_dump_json().encode())}"
        emit({"person": person, "link": link}, as_json, link)
        return OK

    @command(console_cli, "passkeys")
    def passkeys(*, as_json: bool) -> int:
        """The enrolled passkeys, and why any entry of the file does not count."""
        p = session.platform()
        rp = p.console.relying_party()
        try:
            signers = p.identity.signers()
            entries = read_entries(p.identity.path(p.identity.passkeys)) if p.identity.passkeys else []
            kept, problems = p.identity.enrolled(signers, rp) if rp else ([], [])
        except (ConfigError, ValueError, OSError) as e:
            raise CliError(str(e), BAD_INPUT) from None
        ok = {k.credential_id for k in kept}
        rows = [{"person": e.person, "credential": e.credential_id[:16],
                 "enrolled_at": e.enrolled_at.isoformat(), "counts": e.credential_id in ok}
                for e in entries]
        text = "\n".join(f"{'✓' if r['counts'] else '✗'} {r['person']:<16} {r['credential']}…  "
                         f"enrolled {r['enrolled_at'][:19]}" for r in rows) or "no passkeys enrolled"
        emit({"passkeys": rows, "problems": problems}, as_json,
             text + "".join(f"\n  {why}" for why in problems))
        return OK
