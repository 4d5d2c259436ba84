"""GitLab stand-in plumbing: routing on encoded path segments, auth, pagination, JSON shapes.

python-gitlab URL-encodes ids and file paths (`demo%2Fsvc`, `src%2Fmain.go`),
so routes match on the raw path split at real slashes, each segment decoded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common import Audit
from sandbox.gitlab.store import USER, GitLabStore

Handler = Callable[["Call"], Awaitable[Response]]


def error(status: int, message: Any, key: str = "message") -> JSONResponse:
    return JSONResponse({key: message}, status_code=status)


def not_found(what: str) -> JSONResponse:
    return error(404, f"404 {what} Not Found")


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def missing_args(args: dict[str, Any], *names: str) -> Response | None:
    """GitLab's 400 naming the required arguments that are absent or empty, or None."""
    absent = [n for n in names if args.get(n) in (None, "")]
    return error(400, ", ".join(f"{n} is missing" for n in absent), key="error") if absent else None


@dataclass
class Call:
    """One API request: the decoded path parameters and the merged query/body arguments."""
    request: Request
    api: "Api"
    params: dict[str, str]
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> GitLabStore:
        return self.api.store

    def project(self) -> dict[str, Any] | None:
        return self.store.project(self.params["id"])

    def writable_project(self) -> tuple[dict[str, Any] | None, Response | None]:
        """The project, or the answer to a write on a missing (404) or archived (403) one."""
        project = self.project()
        if project is None:
            return None, not_found("Project")
        if project["archived"]:
            return None, error(403, "403 Forbidden")
        return project, None


class Routes:
    """The route handlers of one module, collected at import by `@routes.route(...)`.

    A pattern is the path under /api/v4 with `:name` for a parameter segment."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, list[str], Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.entries.append((method, pattern.split("/"), handler))
            return handler
        return register


class Api:
    def __init__(self, store: GitLabStore, audit: Audit, base_url: str, token: str,
                 routes: list[Routes]) -> None:
        self.store = store
        self.audit = audit
        self.base_url = base_url
        self.token = token
        self.routes = [entry for table in routes for entry in table.entries]

    def save(self) -> None:
        self.store.state.save()

    async def dispatch(self, request: Request) -> Response:
        supplied = request.headers.get("private-token") or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            supplied = supplied or bearer[7:].strip()
        if supplied != self.token:
            return error(401, "401 Unauthorized")
        raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        raw = raw.split("?", 1)[0].removeprefix("/api/v4/").rstrip("/")
        segments = [unquote(s) for s in raw.split("/")]
        method = "GET" if request.method == "HEAD" else request.method
        known_path = False
        for route_method, pattern, handler in self.routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            known_path = True
            if route_method != method:
                continue
            call = Call(request, self, params, await _arguments(request))
            with self.store.lock:
                return await handler(call)
        if known_path:
            return error(405, "405 Method Not Allowed")
        return error(404, "404 Not Found", key="error")

    # ---- pagination -------------------------------------------------------------

    def paginate(self, call: Call, items: list[Any]) -> Response:
        try:
            page = max(1, int(call.args.get("page", 1)))
            per_page = min(100, max(1, int(call.args.get("per_page", 20))))
        except ValueError:
            return error(400, "page is invalid", key="error")
        total = len(items)
        pages = max(1, math.ceil(total / per_page))
        body = items[(page - 1) * per_page: page * per_page]
        url = f"{self.base_url}{call.request.url.path}"
        query = {k: v for k, v in call.request.query_params.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            return f"{url}?{urlencode({**query, 'page': n, 'per_page': per_page})}"
        links = []
        if page > 1:
            links.append(f'<{link(page - 1)}>; rel="prev"')
        if page < pages:
            links.append(f'<{link(page + 1)}>; rel="next"')
        links += [f'<{link(1)}>; rel="first"', f'<{link(pages)}>; rel="last"']
        headers = {
            "X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(total),
            "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "", "Link": ", ".join(links),
        }
        return JSONResponse(body, headers=headers)

    # ---- JSON shapes ----------------------------------------------------------

    def web_url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def namespace_json(self, ns: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in ns.items() if k != "created_at"}
        return {**out, "web_url": self.web_url(ns["full_path"]), "avatar_url": None}

    def group_json(self, ns: dict[str, Any]) -> dict[str, Any]:
        return {**self.namespace_json(ns), "created_at": ns["created_at"]}

    def project_json(self, project: dict[str, Any]) -> dict[str, Any]:
        ns = self.store.namespace(project["namespace_id"])
        assert ns is not None
        hidden = {"commits", "branches", "tags", "hooks", "namespace_id", "merge_requests"}
        out = {k: v for k, v in project.items() if k not in hidden}
        full = project["path_with_namespace"]
        return {
            **out,
            "namespace": {k: ns[k] for k in ("id", "name", "path", "kind", "full_path", "parent_id")}
            | {"web_url": self.web_url(ns["full_path"])},
            "http_url_to_repo": f"{self.base_url}/{full}.git",
            "ssh_url_to_repo": f"git@{self.base_url.split('://', 1)[-1].split(':')[0]}:{full}.git",
            "web_url": self.web_url(full), "empty_repo": not project["commits"],
            "owner": {k: USER[k] for k in ("id", "username", "name")},
        }

    def commit_json(self, project: dict[str, Any], commit: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in commit.items() if k != "tree"}
        return {**out, "web_url": self.web_url(f"{project['path_with_namespace']}/-/commit/{commit['id']}")}

    def branch_json(self, project: dict[str, Any], name: str) -> dict[str, Any]:
        commit = project["commits"][project["branches"][name]]
        return {"name": name, "commit": self.commit_json(project, commit), "merged": False,
                "protected": name == project["default_branch"], "default": name == project["default_branch"],
                "developers_can_push": True, "developers_can_merge": True, "can_push": True,
                "web_url": self.web_url(f"{project['path_with_namespace']}/-/tree/{name}")}

    def tag_json(self, project: dict[str, Any], name: str) -> dict[str, Any]:
        tag = project["tags"][name]
        commit = project["commits"][tag["target"]]
        return {"name": name, "message": tag["message"], "target": tag["target"],
                "commit": self.commit_json(project, commit), "release": None, "protected": False,
                "created_at": tag["created_at"]}


def _match(pattern: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params = {}
    for want, got in zip(pattern, segments):
        if want.startswith(":"):
            if not got:
                return None
            params[want[1:]] = got
        elif want != got:
            return None
    return params


async def _arguments(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return args
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            return {**args, "_invalid_json": True}
        if isinstance(data, dict):
            args.update(data)
    elif "form" in content_type:
        args.update(parse_qsl(body.decode(errors="replace")))
    return args
