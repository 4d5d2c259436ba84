"""GitLab stand-in: a project's branches and tags."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Call, Routes, error, missing_args, not_found
from sandbox.gitlab.store import REF_RE, now_iso

routes = Routes()


@routes.route("GET", "projects/:id/repository/branches")
async def list_branches(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    term = str(call.args.get("search") or "")
    names = sorted(n for n in project["branches"] if term in n)
    return call.api.paginate(call, [call.api.branch_json(project, n) for n in names])


@routes.route("GET", "projects/:id/repository/branches/:branch")
async def get_branch(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if call.params["branch"] not in project["branches"]:
        return not_found("Branch")
    return JSONResponse(call.api.branch_json(project, call.params["branch"]))


@routes.route("POST", "projects/:id/repository/branches")
async def create_branch(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    if (problem := missing_args(call.args, "branch", "ref")) is not None:
        return problem
    name, ref = str(call.args["branch"]), str(call.args["ref"])
    if not REF_RE.match(name):
        return error(400, "Branch name is invalid")
    if name in project["branches"]:
        return error(400, "Branch already exists")
    commit = call.store.commit(project, ref)
    if commit is None:
        return error(400, f"Invalid reference name: {ref}")
    project["branches"][name] = commit["id"]
    call.api.save()
    call.api.audit.record("create_branch", project=project["path_with_namespace"], branch=name,
                          sha=commit["id"])
    return JSONResponse(call.api.branch_json(project, name), status_code=201)


@routes.route("DELETE", "projects/:id/repository/branches/:branch")
async def delete_branch(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    name = call.params["branch"]
    if name not in project["branches"]:
        return not_found("Branch")
    if name == project["default_branch"]:
        return error(400, "Cannot remove the default branch")
    del project["branches"][name]
    call.api.save()
    call.api.audit.record("delete_branch", project=project["path_with_namespace"], branch=name)
    return Response(status_code=204)


@routes.route("GET", "projects/:id/repository/tags")
async def list_tags(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    names = sorted(project["tags"], key=lambda n: project["tags"][n]["created_at"], reverse=True)
    return call.api.paginate(call, [call.api.tag_json(project, n) for n in names])


@routes.route("GET", "projects/:id/repository/tags/:tag")
async def get_tag(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if call.params["tag"] not in project["tags"]:
        return not_found("Tag")
    return JSONResponse(call.api.tag_json(project, call.params["tag"]))


@routes.route("POST", "projects/:id/repository/tags")
async def create_tag(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    if (problem := missing_args(call.args, "tag_name", "ref")) is not None:
        return problem
    name, ref = str(call.args["tag_name"]), str(call.args["ref"])
    if not REF_RE.match(name):
        return error(400, "Tag name invalid")
    if name in project["tags"]:
        return error(400, f"Tag {name} already exists")
    commit = call.store.commit(project, ref)
    if commit is None:
        return error(400, "Target {} is invalid".format(ref))
    project["tags"][name] = {"target": commit["id"], "message": str(call.args.get("message") or ""),
                             "created_at": now_iso()}
    call.api.save()
    call.api.audit.record("create_tag", project=project["path_with_namespace"], tag=name, sha=commit["id"])
    return JSONResponse(call.api.tag_json(project, name), status_code=201)


@routes.route("DELETE", "projects/:id/repository/tags/:tag")
async def delete_tag(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    if call.params["tag"] not in project["tags"]:
        return not_found("Tag")
    del project["tags"][call.params["tag"]]
    call.api.save()
    call.api.audit.record("delete_tag", project=project["path_with_namespace"], tag=call.params["tag"])
    return Response(status_code=204)
