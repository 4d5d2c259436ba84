"""GitLab stand-in: the API v4 subset Kepler drives with python-gitlab.

Namespaces (the `kepler` user, groups `kepler-templates` with projects `go`,
`python`, `static`, and `demo`), projects (create, from a template, get by id
or path, list, archive, unarchive, delete), hooks, and, in
sandbox/gitlab/repository.py, files, commits, branches, tags and archives.
Validation and error bodies follow GitLab: a taken name or path is a 400 with
field errors, as GitLab answers.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.common import StateStore
from sandbox.gitlab.api import Api, Call, error, not_found, truthy
from sandbox.gitlab.hooks import register_hook_routes
from sandbox.gitlab.repository import register_repository_routes
from sandbox.gitlab.store import NAME_RE, NAME_RULE, USER, GitLabStore, path_problem
from sandbox.world import World


def _search(items: list[dict[str, Any]], call: Call, *fields: str) -> list[dict[str, Any]]:
    term = str(call.args.get("search", "")).lower()
    if not term:
        return items
    return [i for i in items if any(term in str(i.get(f, "")).lower() for f in fields)]


def register_project_routes(api: Api) -> None:
    store = api.store

    @api.route("GET", "user")
    async def current_user(_: Call) -> Response:
        return JSONResponse({**USER, "web_url": api.web_url(USER["username"]), "is_admin": True})

    @api.route("GET", "version")
    async def version(_: Call) -> Response:
        return JSONResponse({"version": "17.5.0-sandbox", "revision": "sandbox"})

    @api.route("GET", "namespaces")
    async def list_namespaces(call: Call) -> Response:
        items = _search(store.namespaces(), call, "name", "full_path")
        return api.paginate(call, [api.namespace_json(n) for n in items])

    @api.route("GET", "namespaces/:id")
    async def get_namespace(call: Call) -> Response:
        ns = store.namespace(call.params["id"])
        return JSONResponse(api.namespace_json(ns)) if ns else not_found("Namespace")

    @api.route("GET", "groups")
    async def list_groups(call: Call) -> Response:
        groups = [n for n in store.namespaces() if n["kind"] == "group"]
        items = _search(groups, call, "name", "full_path")
        return api.paginate(call, [api.group_json(g) for g in items])

    def group(call: Call) -> dict[str, Any] | None:
        ns = store.namespace(call.params["id"])
        return ns if ns and ns["kind"] == "group" else None

    @api.route("GET", "groups/:id")
    async def get_group(call: Call) -> Response:
        ns = group(call)
        if ns is None:
            return not_found("Group")
        projects = [api.project_json(p) for p in store.projects() if p["namespace_id"] == ns["id"]]
        return JSONResponse({**api.group_json(ns), "projects": projects, "shared_projects": []})

    @api.route("GET", "groups/:id/projects")
    async def group_projects(call: Call) -> Response:
        ns = group(call)
        if ns is None:
            return not_found("Group")
        items = [p for p in store.projects() if p["namespace_id"] == ns["id"]]
        return api.paginate(call, [api.project_json(p) for p in _filter_projects(items, call)])

    @api.route("GET", "projects")
    async def list_projects(call: Call) -> Response:
        items = _filter_projects(store.projects(), call)
        return api.paginate(call, [api.project_json(p) for p in items])

    @api.route("GET", "projects/:id")
    async def get_project(call: Call) -> Response:
        project = call.project()
        return JSONResponse(api.project_json(project)) if project else not_found("Project")

    @api.route("POST", "projects")
    async def create_project(call: Call) -> Response:
        return create(call)

    @api.route("PUT", "projects/:id")
    async def edit_project(call: Call) -> Response:
        project = call.project()
        if project is None:
            return not_found("Project")
        for key in ("description", "default_branch", "visibility"):
            if key in call.args:
                project[key] = call.args[key]
        if "name" in call.args:
            if not NAME_RE.match(str(call.args["name"])):
                return error(400, {"name": [NAME_RULE]})
            project["name"] = call.args["name"]
        api.save()
        api.audit.record("edit_project", project=project["path_with_namespace"])
        return JSONResponse(api.project_json(project))

    @api.route("POST", "projects/:id/archive")
    async def archive(call: Call) -> Response:
        return set_archived(call, True)

    @api.route("POST", "projects/:id/unarchive")
    async def unarchive(call: Call) -> Response:
        return set_archived(call, False)

    def set_archived(call: Call, archived: bool) -> Response:
        project = call.project()
        if project is None:
            return not_found("Project")
        if project["archived"] != archived:
            project["archived"] = archived
            api.save()
            api.audit.record("archive_project" if archived else "unarchive_project",
                             project=project["path_with_namespace"])
        return JSONResponse(api.project_json(project), status_code=201)

    @api.route("DELETE", "projects/:id")
    async def delete_project(call: Call) -> Response:
        project = call.project()
        if project is None:
            return not_found("Project")
        del store.data["projects"][str(project["id"])]
        api.save()
        api.audit.record("delete_project", project=project["path_with_namespace"])
        return JSONResponse({"message": "202 Accepted"}, status_code=202)

    def create(call: Call) -> Response:
        args = call.args
        name, path = str(args.get("name") or ""), str(args.get("path") or "")
        if not name and not path:
            return error(400, "name, path are missing, at least one parameter must be provided",
                         key="error")
        name, path = name or path, path or name.lower().replace(" ", "-")
        namespace_ref = args.get("namespace_id") or args.get("namespace") or USER["username"]
        namespace = store.namespace(namespace_ref)
        if namespace is None:
            return not_found("Namespace")
        problems: dict[str, list[str]] = {}
        if problem := path_problem(path):
            problems["path"] = [problem]
        if not NAME_RE.match(name):
            problems["name"] = [NAME_RULE]
        template, template_problem = _template(store, args)
        if template_problem:
            problems.update(template_problem)
        if problems:
            return error(400, problems)
        taken = store.taken(namespace, name, path)
        if taken:
            return error(400, taken)
        project = store.add_project(namespace, name, path, str(args.get("description") or ""),
                                    str(args.get("default_branch") or "main"),
                                    str(args.get("visibility") or "private"))
        branch = project["default_branch"]
        if template is not None:
            source = store.commit(template, template["default_branch"])
            if source is not None:
                store.add_commit(project, branch, dict(source["tree"]),
                                 f"Initialized from template {template['path_with_namespace']}", None)
        elif truthy(args.get("initialize_with_readme")):
            tree = {"README.md": store.put_blob(f"# {name}\n".encode())}
            store.add_commit(project, branch, tree, "Initial commit", None)
        api.save()
        api.audit.record("create_project", project=project["path_with_namespace"], id=project["id"],
                         template=template["path_with_namespace"] if template else None)
        return JSONResponse(api.project_json(project), status_code=201)


def _template(store: GitLabStore, args: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    if args.get("template_project_id") not in (None, ""):
        template = store.project(str(args["template_project_id"]))
        if template is None:
            return None, {"template_project_id": ["is invalid or you do not have access to it"]}
        return template, {}
    if not truthy(args.get("use_custom_template")) and not args.get("template_name"):
        return None, {}
    name = str(args.get("template_name") or "")
    group_id = args.get("group_with_project_templates_id")
    group = store.namespace(group_id) if group_id not in (None, "") else store.namespace("kepler-templates")
    template = None
    if group is not None:
        template = next((p for p in store.projects()
                         if p["namespace_id"] == group["id"] and p["path"] == name), None)
    if template is None:
        return None, {"template_name": [f"'{name}' is unknown or invalid"]}
    return template, {}


def _filter_projects(items: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
    if "archived" in call.args:
        wanted = truthy(call.args["archived"])
        items = [p for p in items if p["archived"] == wanted]
    return _search(items, call, "name", "path", "path_with_namespace")


def create_app(world: World) -> Starlette:
    state = world.state_path("gitlab")
    store = GitLabStore(StateStore(state / "state.json" if state else None, {}))
    api = Api(store, world.audits["gitlab"], world.urls["gitlab"], world.settings.gitlab_token)
    register_project_routes(api)
    register_repository_routes(api)
    register_hook_routes(api)
    world.components["gitlab"] = store
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/api/v4/{rest:path}", api.dispatch, methods=methods)])
