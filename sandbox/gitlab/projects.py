"""GitLab stand-in: the user, namespaces, groups and projects.

Namespaces (the `kepler` user, groups `kepler-templates` with projects `go`,
`python`, `static`, and `demo`) and projects (create, from a template, get by id
or path, list, archive, unarchive, delete). Validation and error bodies follow
GitLab: a taken name or path is a 400 with field errors, as GitLab answers.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Call, Routes, error, not_found, truthy
from sandbox.gitlab.store import NAME_RE, NAME_RULE, USER, GitLabStore, path_problem

routes = Routes()


def _search(items: list[dict[str, Any]], call: Call, *fields: str) -> list[dict[str, Any]]:
    term = str(call.args.get("search", "")).lower()
    if not term:
        return items
    return [i for i in items if any(term in str(i.get(f, "")).lower() for f in fields)]


@routes.route("GET", "user")
async def current_user(call: Call) -> Response:
    return JSONResponse({**USER, "web_url": call.api.web_url(USER["username"]), "is_admin": True})


@routes.route("GET", "version")
async def version(_: Call) -> Response:
    return JSONResponse({"version": "17.5.0-sandbox", "revision": "sandbox"})


@routes.route("GET", "namespaces")
async def list_namespaces(call: Call) -> Response:
    items = _search(call.store.namespaces(), call, "name", "full_path")
    return call.api.paginate(call, [call.api.namespace_json(n) for n in items])


@routes.route("GET", "namespaces/:id")
async def get_namespace(call: Call) -> Response:
    ns = call.store.namespace(call.params["id"])
    return JSONResponse(call.api.namespace_json(ns)) if ns else not_found("Namespace")


@routes.route("GET", "groups")
async def list_groups(call: Call) -> Response:
    groups = [n for n in call.store.namespaces() if n["kind"] == "group"]
    items = _search(groups, call, "name", "full_path")
    return call.api.paginate(call, [call.api.group_json(g) for g in items])


def _group(call: Call) -> dict[str, Any] | None:
    ns = call.store.namespace(call.params["id"])
    return ns if ns and ns["kind"] == "group" else None


@routes.route("GET", "groups/:id")
async def get_group(call: Call) -> Response:
    ns = _group(call)
    if ns is None:
        return not_found("Group")
    api = call.api
    projects = [api.project_json(p) for p in call.store.projects() if p["namespace_id"] == ns["id"]]
    return JSONResponse({**api.group_json(ns), "projects": projects, "shared_projects": []})


@routes.route("GET", "groups/:id/projects")
async def group_projects(call: Call) -> Response:
    ns = _group(call)
    if ns is None:
        return not_found("Group")
    items = [p for p in call.store.projects() if p["namespace_id"] == ns["id"]]
    return call.api.paginate(call, [call.api.project_json(p) for p in _filter_projects(items, call)])


@routes.route("GET", "projects")
async def list_projects(call: Call) -> Response:
    items = _filter_projects(call.store.projects(), call)
    return call.api.paginate(call, [call.api.project_json(p) for p in items])


@routes.route("GET", "projects/:id")
async def get_project(call: Call) -> Response:
    project = call.project()
    return JSONResponse(call.api.project_json(project)) if project else not_found("Project")


@routes.route("POST", "projects")
async def create_project(call: Call) -> Response:
    return _create(call)


@routes.route("PUT", "projects/:id")
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
    call.api.save()
    call.api.audit.record("edit_project", project=project["path_with_namespace"])
    return JSONResponse(call.api.project_json(project))


@routes.route("POST", "projects/:id/archive")
async def archive(call: Call) -> Response:
    return _set_archived(call, True)


@routes.route("POST", "projects/:id/unarchive")
async def unarchive(call: Call) -> Response:
    return _set_archived(call, False)


def _set_archived(call: Call, archived: bool) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if project["archived"] != archived:
        project["archived"] = archived
        call.api.save()
        call.api.audit.record("archive_project" if archived else "unarchive_project",
                              project=project["path_with_namespace"])
    return JSONResponse(call.api.project_json(project), status_code=201)


@routes.route("DELETE", "projects/:id")
async def delete_project(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    del call.store.data["projects"][str(project["id"])]
    call.api.save()
    call.api.audit.record("delete_project", project=project["path_with_namespace"])
    return JSONResponse({"message": "202 Accepted"}, status_code=202)


def _create(call: Call) -> Response:
    store, args = call.store, call.args
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
    _first_commit(store, project, template, truthy(args.get("initialize_with_readme")))
    call.api.save()
    call.api.audit.record("create_project", project=project["path_with_namespace"], id=project["id"],
                          template=template["path_with_namespace"] if template else None)
    return JSONResponse(call.api.project_json(project), status_code=201)


def _first_commit(store: GitLabStore, project: dict[str, Any], template: dict[str, Any] | None,
                  with_readme: bool) -> None:
    """A new project's history: the template's tree, a README, or nothing."""
    branch = project["default_branch"]
    if template is not None:
        source = store.commit(template, template["default_branch"])
        if source is not None:
            store.add_commit(project, branch, dict(source["tree"]),
                             f"Initialized from template {template['path_with_namespace']}", None)
    elif with_readme:
        tree = {"README.md": store.put_blob(f"# {project['name']}\n".encode())}
        store.add_commit(project, branch, tree, "Initial commit", None)


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
