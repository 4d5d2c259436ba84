"""The Kepler console: an ASGI app (Starlette) that reads through the same client modules
as the CLI and holds no authority of its own (starter/console/auth.py says why).

Every page has a stable URL and is whole without JavaScript; with it, the page's `live`
block is re-rendered on the server and pushed as server-sent events when it changes
(`/live?page=PATH`). Every asset is served by the app (no CDN), under a strict
Content-Security-Policy; every POST is JSON from the app's own script, bounded, with the
session's CSRF token and the console's own Origin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlsplit

import jinja2
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles

from kepler.clients.temporal import LazyClient
from kepler.settings import Platform
from kepler.validation import service_name
from starter.console.auth import SESSION_COOKIE, BadToken, Tokens, Viewer
from starter.console.reads import Specs
from starter.http_body import BodyTooLarge, read_body

log = logging.getLogger("kepler.console")
HERE = Path(__file__).resolve().parent
MAX_BODY = 64 * 1024
MAX_CACHED = 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PageData = Callable[["Console", Viewer, dict[str, str], dict[str, str]], Awaitable[dict[str, Any]]]


class Problem(Exception):
    """A refusal the page or script shows as it is (HTTP `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Page:
    """One page: its URL, its template (with a `live` block) and what it shows."""
    path: str
    template: str
    data: PageData


@dataclass
class Console:
    platform: Platform
    client: LazyClient
    tokens: Tokens
    templates: jinja2.Environment = field(default_factory=lambda: jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined))
    pages: list[Page] = field(default_factory=list)
    specs: Specs = field(default_factory=Specs)
    clusters: Any = None  # kepler.clients.kube.Clusters: Kubernetes reads, per environment
    gitlab: Any = None  # kepler.clients.gitlab.GitLabReader
    cache: dict[Any, Any] = field(default_factory=dict)  # what never changes once read

    def __post_init__(self) -> None:
        from starter.console.service_reads import span

        self.templates.filters["duration"] = span

    def remember(self, key: Any, value: Any) -> Any:
        if len(self.cache) >= MAX_CACHED:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = value
        return value

    @property
    def origin(self) -> str | None:
        rp = self.platform.console.relying_party()
        return rp.origins[0] if rp else None

    def secure(self) -> bool:
        return (self.platform.console.url or "").startswith("https://")

    def viewer(self, request: Request) -> Viewer | None:
        try:
            data = self.tokens.read("session", request.cookies.get(SESSION_COOKIE, ""))
            return Viewer(person=data["person"], via="passkey")
        except BadToken:
            pass
        header = self.platform.console.trusted_header
        person = request.headers.get(header, "") if header else ""
        return Viewer(person=person[:100], via="sso") if person else None

    def render(self, template: str, request: Request, **context: Any) -> str:
        session = request.cookies.get(SESSION_COOKIE, "")
        return self.templates.get_template(template).render(
            request_path=request.url.path, query=request.url.query,
            csrf=self.tokens.csrf(session) if session else "", **context)

    def render_live(self, template: str, context: dict[str, Any]) -> str:
        tpl = self.templates.get_template(template)
        return "".join(tpl.blocks["live"](tpl.new_context(context)))


def service_and_env(console: Console, params: dict[str, str]) -> tuple[str, str]:
    """A page's SERVICE and ENV from its URL: a valid name (400 naming the rule) and an
    environment of kepler.yaml (404 naming those there are)."""
    service, env = params["service"], params["env"]
    try:
        service_name(service)
    except ValueError as e:
        raise Problem(f"service: {e}", 400) from None
    if env not in console.platform.environments:
        raise Problem(f"env: unknown environment {env!r} (configured: "
                      f"{', '.join(sorted(console.platform.environments))})", 404)
    return service, env


async def json_body(request: Request, console: Console, csrf: bool = True) -> dict[str, Any]:
    """A POST's JSON body, after the checks every POST gets: the console's own origin,
    the session's CSRF token (`csrf`), at most MAX_BODY bytes, an object."""
    origin = request.headers.get("origin", "")
    want = console.origin or f"{request.url.scheme}://{request.url.netloc}"
    if origin != want:
        raise Problem(f"origin {origin or '(none)'!r} is not the console's ({want})", 403)
    if csrf and not console.tokens.check_csrf(request.cookies.get(SESSION_COOKIE, ""),
                                              request.headers.get("x-csrf-token", "")):
        raise Problem("CSRF token missing or not this session's (reload the page)", 403)
    try:
        data = json.loads(await read_body(request, MAX_BODY))
    except BodyTooLarge as e:
        raise Problem(str(e), 413) from None
    except ValueError:
        raise Problem("the body is not JSON") from None
    if not isinstance(data, dict):
        raise Problem("the body must be a JSON object")
    return data


def page_route(console: Console, page: Page) -> Route:
    async def handler(request: Request) -> Response:
        viewer = console.viewer(request)
        if viewer is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", 303)
        data = await page.data(console, viewer, dict(request.path_params), dict(request.query_params))
        return HTMLResponse(console.render(page.template, request, viewer=viewer, **data))
    return Route(page.path, handler, methods=["GET"])


def match_page(console: Console, routes: list[BaseRoute], path: str) -> tuple[Page, dict[str, str]]:
    parts = urlsplit(path)
    for route, page in zip(routes, console.pages):
        found, scope = route.matches({"type": "http", "path": parts.path, "method": "GET"})
        if found == Match.FULL:
            return page, dict(scope["path_params"])
    raise Problem(f"no page at {parts.path}", 404)


def live_route(console: Console, routes: list[BaseRoute]) -> Route:
    async def live(request: Request) -> Response:
        viewer = console.viewer(request)
        if viewer is None:
            raise HTTPException(401, "sign in first")
        path = request.query_params.get("page", "/")
        page, params = match_page(console, routes, path)
        query = dict(request.query_params) | dict(
            (k, v) for k, v in [q.split("=", 1) for q in urlsplit(path).query.split("&") if "=" in q])

        async def events() -> AsyncIterator[dict[str, str]]:
            last = ""
            while True:
                try:
                    data = await page.data(console, viewer, params, query)
                    html = console.render_live(page.template, {"viewer": viewer, "csrf": "",
                                                               "request_path": path, **data})
                except Problem as e:
                    html = f'<p class="problem">{jinja2.utils.markupsafe.escape(str(e))}</p>'
                digest = hashlib.sha256(html.encode()).hexdigest()
                if digest != last:
                    last = digest
                    yield {"event": "live", "data": html}
                await asyncio.sleep(console.platform.console.refresh.total_seconds())
        return EventSourceResponse(events(), ping=15)
    return Route("/live", live, methods=["GET"])


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.update({"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
                                 "Cache-Control": "no-store"})
        return response


def build_app(console: Console, extra_routes: list[BaseRoute]) -> Starlette:
    page_routes: list[BaseRoute] = [page_route(console, p) for p in console.pages]

    async def problem(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, Problem) else getattr(exc, "status_code", 500)
        message = str(exc) if isinstance(exc, Problem) else getattr(exc, "detail", "error")
        if request.method == "POST" or request.url.path == "/live":
            return JSONResponse({"error": message}, status)
        return HTMLResponse(console.render("problem.html", request, viewer=console.viewer(request),
                                           message=message, status=status), status)

    return Starlette(
        routes=[*page_routes, live_route(console, page_routes), *extra_routes,
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={Problem: problem, HTTPException: problem})
