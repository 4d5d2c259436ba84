"""GitLab stand-in: a project's merge requests and their notes, and GitLab's Merge Request
Hook payload, delivered on open, update (title/description edited, or a push to an open
MR's source branch, with `oldrev`), close, reopen and merge.

Merging only fast-forwards: the target branch's head becomes the source's head commit,
which is the MR's `merge_commit_sha`. A target that moved past the source (a real merge
would need a merge commit, and could conflict) is answered 406, as GitLab answers a
branch it cannot merge; an MR that is not open, or whose source branch is gone, 405.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Api, Call, Routes, error, missing_args, not_found, truthy
from sandbox.gitlab.hooks import deliver_in_background, fire_push_hooks
from sandbox.gitlab.store import USER, now_iso

routes = Routes()

STATES = ("opened", "closed", "merged")
# GitLab's validation limits: they also bound the hook payloads that carry these texts.
MAX_DESCRIPTION = 1_048_576
MAX_NOTE = 1_000_000
VISIBILITY_LEVEL = {"private": 0, "internal": 10, "public": 20}


def _merge_requests(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return project.setdefault("merge_requests", {})  # absent from state saved before MRs


def _user(api: Api) -> dict[str, Any]:
    return {k: USER[k] for k in ("id", "username", "name", "state")} | {
        "avatar_url": None, "web_url": api.web_url(USER["username"])}


def mr_json(api: Api, project: dict[str, Any], mr: dict[str, Any]) -> dict[str, Any]:
    full = project["path_with_namespace"]
    out = {k: v for k, v in mr.items() if k != "notes"}
    merged, closed = mr["state"] == "merged", mr["state"] == "closed"
    return {
        **out, "target_project_id": project["id"], "source_project_id": project["id"],
        "author": _user(api), "assignee": None, "assignees": [], "reviewers": [], "labels": [],
        "draft": False, "work_in_progress": False, "milestone": None,
        "merge_status": "can_be_merged", "detailed_merge_status": "not_open" if merged or closed
        else "mergeable", "has_conflicts": False, "squash": False, "user_notes_count": len(mr["notes"]),
        "merged_by": _user(api) if merged else None, "merge_user": _user(api) if merged else None,
        "closed_by": _user(api) if closed else None, "should_remove_source_branch": None,
        "force_remove_source_branch": False, "reference": f"!{mr['iid']}",
        "references": {"short": f"!{mr['iid']}", "relative": f"!{mr['iid']}",
                       "full": f"{full}!{mr['iid']}"},
        "web_url": api.web_url(f"{full}/-/merge_requests/{mr['iid']}"),
    }


def _note_json(project: dict[str, Any], mr: dict[str, Any], note: dict[str, Any],
               api: Api) -> dict[str, Any]:
    return {**note, "type": None, "attachment": None, "author": _user(api), "system": False,
            "noteable_id": mr["id"], "noteable_type": "MergeRequest", "noteable_iid": mr["iid"],
            "project_id": project["id"], "resolvable": False, "confidential": False,
            "internal": False}


def _hook_date(iso: str | None) -> str | None:
    """GitLab's hook payloads write times as `2024-01-01 12:00:00 UTC`."""
    return f"{iso[:10]} {iso[11:19]} UTC" if iso else None


def _hook_payload(api: Api, project: dict[str, Any], mr: dict[str, Any], action: str,
                  oldrev: str | None, changes: dict[str, Any]) -> dict[str, Any]:
    full = project["path_with_namespace"]
    ns = api.store.namespace(project["namespace_id"])
    web_url = api.web_url(full)
    http_url = f"{api.base_url}/{full}.git"
    ssh_url = f"git@{api.base_url.split('://', 1)[-1].split(':')[0]}:{full}.git"
    hook_project = {
        "id": project["id"], "name": project["name"], "description": project["description"],
        "web_url": web_url, "avatar_url": None, "git_ssh_url": ssh_url, "git_http_url": http_url,
        "namespace": ns["name"] if ns else "", "path_with_namespace": full,
        "visibility_level": VISIBILITY_LEVEL.get(project["visibility"], 0),
        "default_branch": project["default_branch"], "homepage": web_url, "url": ssh_url,
        "ssh_url": ssh_url, "http_url": http_url}
    commit = project["commits"].get(mr["sha"])
    last_commit = None if commit is None else {
        "id": commit["id"], "message": commit["message"], "title": commit["title"],
        "timestamp": commit["committed_date"], "url": api.commit_json(project, commit)["web_url"],
        "author": {"name": commit["author_name"], "email": commit["author_email"]}}
    attributes = {
        "id": mr["id"], "iid": mr["iid"], "title": mr["title"], "description": mr["description"],
        "state": mr["state"], "source_branch": mr["source_branch"],
        "target_branch": mr["target_branch"], "source_project_id": project["id"],
        "target_project_id": project["id"], "author_id": USER["id"], "assignee_ids": [],
        "reviewer_ids": [], "labels": [], "created_at": _hook_date(mr["created_at"]),
        "updated_at": _hook_date(mr["updated_at"]), "merged_at": _hook_date(mr["merged_at"]),
        "closed_at": _hook_date(mr["closed_at"]), "merge_commit_sha": mr["merge_commit_sha"],
        "merge_status": "can_be_merged", "draft": False, "work_in_progress": False,
        "url": api.web_url(f"{full}/-/merge_requests/{mr['iid']}"), "source": hook_project,
        "target": hook_project, "last_commit": last_commit, "action": action}
    if oldrev is not None:
        attributes["oldrev"] = oldrev
    user = {k: USER[k] for k in ("id", "name", "username", "email")} | {"avatar_url": None}
    return {"object_kind": "merge_request", "event_type": "merge_request", "user": user,
            "project": hook_project, "object_attributes": attributes, "labels": [],
            "changes": changes,
            "repository": {"name": project["name"], "url": ssh_url,
                           "description": project["description"], "homepage": web_url}}


def fire_mr_hooks(api: Api, project: dict[str, Any], mr: dict[str, Any], action: str,
                  oldrev: str | None = None, changes: dict[str, Any] | None = None) -> None:
    hooks = [dict(h) for h in project["hooks"].values() if h.get("merge_requests_events")]
    if hooks:
        payload = _hook_payload(api, project, mr, action, oldrev, changes or {})
        deliver_in_background(api, hooks, "Merge Request Hook", payload)


def pushed(api: Api, project: dict[str, Any], branch: str, commit: dict[str, Any],
           before: dict[str, Any] | None) -> None:
    """A new head on `branch`: the Push Hook, and an update of each open MR from it."""
    fire_push_hooks(api, project, branch, commit, before)
    for mr in _merge_requests(project).values():
        if mr["state"] == "opened" and mr["source_branch"] == branch and mr["sha"] != commit["id"]:
            oldrev = mr["sha"]
            mr["sha"], mr["updated_at"] = commit["id"], now_iso()
            fire_mr_hooks(api, project, mr, "update", oldrev=oldrev)


def _open_duplicate(project: dict[str, Any], source: str, target: str,
                    iid: int | None = None) -> Response | None:
    """GitLab's 409 when another open MR has the same source and target branches."""
    for other in _merge_requests(project).values():
        if (other["state"] == "opened" and other["iid"] != iid and other["source_branch"] == source
                and other["target_branch"] == target):
            return error(409, [f"Another open merge request already exists for this source "
                               f"branch: !{other['iid']}"])
    return None


def _too_long(args: dict[str, Any], name: str, limit: int) -> Response | None:
    if len(str(args.get(name) or "")) > limit:
        return error(400, {name: [f"is too long (maximum is {limit} characters)"]})
    return None


def _find(call: Call, write: bool = False) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                                     Response | None]:
    """The project and MR of the path, or the answer when either is missing (or archived)."""
    if write:
        project, problem = call.writable_project()
    else:
        project = call.project()
        problem = None if project else not_found("Project")
    if project is None:
        return None, None, problem
    mr = _merge_requests(project).get(call.params["iid"])
    if mr is None:
        return project, None, not_found("Merge Request")
    return project, mr, None


@routes.route("POST", "projects/:id/merge_requests")
async def create_mr(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    args = call.args
    if (problem := missing_args(args, "source_branch", "target_branch", "title")) is not None:
        return problem
    if (problem := _too_long(args, "description", MAX_DESCRIPTION)) is not None:
        return problem
    source, target = str(args["source_branch"]), str(args["target_branch"])
    # GitLab answers an unknown branch with a validation error (400), not a 404.
    absent = {name: ["does not exist"] for name, branch in (("source_branch", source),
              ("target_branch", target)) if branch not in project["branches"]}
    if absent:
        return error(400, absent)
    if source == target:
        return error(409, ["You can't use same project/branch for source and target"])
    if (problem := _open_duplicate(project, source, target)) is not None:
        return problem
    mrs = _merge_requests(project)
    iid = max((m["iid"] for m in mrs.values()), default=0) + 1
    created = now_iso()
    mr = {"id": call.store.next_id("merge_request"), "iid": iid, "project_id": project["id"],
          "title": str(args["title"]), "description": str(args.get("description") or ""),
          "state": "opened", "source_branch": source, "target_branch": target,
          "sha": project["branches"][source], "created_at": created, "updated_at": created,
          "merged_at": None, "closed_at": None, "merge_commit_sha": None, "notes": []}
    mrs[str(iid)] = mr
    call.api.save()
    call.api.audit.record("create_merge_request", project=project["path_with_namespace"], iid=iid,
                          source_branch=source, target_branch=target)
    fire_mr_hooks(call.api, project, mr, "open")
    return JSONResponse(mr_json(call.api, project, mr), status_code=201)


@routes.route("GET", "projects/:id/merge_requests")
async def list_mrs(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    state = str(call.args.get("state") or "all")
    if state not in (*STATES, "all", "locked"):
        return error(400, "state does not have a valid value", key="error")
    items = sorted(_merge_requests(project).values(), key=lambda m: m["iid"], reverse=True)
    items = [m for m in items if state in ("all", m["state"])]
    for name in ("source_branch", "target_branch"):
        if call.args.get(name):
            items = [m for m in items if m[name] == call.args[name]]
    return call.api.paginate(call, [mr_json(call.api, project, m) for m in items])


@routes.route("GET", "projects/:id/merge_requests/:iid")
async def get_mr(call: Call) -> Response:
    project, mr, problem = _find(call)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    return JSONResponse(mr_json(call.api, project, mr))


@routes.route("PUT", "projects/:id/merge_requests/:iid")
async def update_mr(call: Call) -> Response:
    project, mr, problem = _find(call, write=True)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    args, api = call.args, call.api
    if (problem := _too_long(args, "description", MAX_DESCRIPTION)) is not None:
        return problem
    if "title" in args and args["title"] in (None, ""):
        return error(400, {"title": ["can't be blank"]})
    event = args.get("state_event")
    if event not in (None, "", "close", "reopen"):
        return error(400, "state_event does not have a valid value", key="error")
    reopening = event == "reopen" and mr["state"] == "closed"
    if reopening and (dup := _open_duplicate(project, mr["source_branch"], mr["target_branch"],
                                             mr["iid"])):
        return dup
    changes = {name: {"previous": mr[name], "current": str(args[name])}
               for name in ("title", "description")
               if name in args and str(args[name] or "") != mr[name]}
    for name, change in changes.items():
        mr[name] = change["current"]
    action = None
    if event == "close" and mr["state"] == "opened":
        mr["state"], mr["closed_at"], action = "closed", now_iso(), "close"
    elif reopening:
        mr["state"], mr["closed_at"], action = "opened", None, "reopen"
        mr["sha"] = project["branches"].get(mr["source_branch"], mr["sha"])
    if changes or action:
        mr["updated_at"] = now_iso()
        api.save()
        api.audit.record("update_merge_request", project=project["path_with_namespace"],
                         iid=mr["iid"], state_event=action, changed=sorted(changes))
    if changes:
        fire_mr_hooks(api, project, mr, "update", changes=changes)
    if action:
        fire_mr_hooks(api, project, mr, action)
    return JSONResponse(mr_json(api, project, mr))


@routes.route("PUT", "projects/:id/merge_requests/:iid/merge")
async def merge_mr(call: Call) -> Response:
    project, mr, problem = _find(call, write=True)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    source, target = mr["source_branch"], mr["target_branch"]
    if mr["state"] != "opened" or source not in project["branches"] or target not in project["branches"]:
        return error(405, "405 Method Not Allowed")
    head = call.store.commit(project, source)
    before = call.store.commit(project, target)
    assert head is not None and before is not None
    if call.args.get("sha") and call.args["sha"] != head["id"]:
        return error(409, f"SHA does not match HEAD of source branch: {head['id']}")
    if before["id"] not in {c["id"] for c in call.store.history(project, head)}:
        return error(406, "Branch cannot be merged")
    project["branches"][target] = head["id"]
    now = now_iso()
    mr.update(state="merged", merged_at=now, updated_at=now, sha=head["id"],
              merge_commit_sha=head["id"])
    if truthy(call.args.get("should_remove_source_branch")) and source != project["default_branch"]:
        del project["branches"][source]
    project["last_activity_at"] = now
    call.api.save()
    call.api.audit.record("merge_merge_request", project=project["path_with_namespace"],
                          iid=mr["iid"], target_branch=target, sha=head["id"])
    fire_mr_hooks(call.api, project, mr, "merge")
    if before["id"] != head["id"]:
        pushed(call.api, project, target, head, before)
    return JSONResponse(mr_json(call.api, project, mr))


# ---- notes ------------------------------------------------------------------------


@routes.route("GET", "projects/:id/merge_requests/:iid/notes")
async def list_notes(call: Call) -> Response:
    project, mr, problem = _find(call)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    ascending = call.args.get("sort") == "asc"
    notes = sorted(mr["notes"], key=lambda n: n["id"], reverse=not ascending)
    return call.api.paginate(call, [_note_json(project, mr, n, call.api) for n in notes])


@routes.route("POST", "projects/:id/merge_requests/:iid/notes")
async def create_note(call: Call) -> Response:
    project, mr, problem = _find(call, write=True)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    if (problem := missing_args(call.args, "body") or _too_long(call.args, "body", MAX_NOTE)):
        return problem
    created = now_iso()
    note = {"id": call.store.next_id("note"), "body": str(call.args["body"]),
            "created_at": created, "updated_at": created}
    mr["notes"].append(note)
    call.api.save()
    call.api.audit.record("create_note", project=project["path_with_namespace"], iid=mr["iid"],
                          note_id=note["id"])
    return JSONResponse(_note_json(project, mr, note, call.api), status_code=201)


def _note(mr: dict[str, Any], note_id: str) -> dict[str, Any] | None:
    return next((n for n in mr["notes"] if str(n["id"]) == note_id), None)


@routes.route("GET", "projects/:id/merge_requests/:iid/notes/:note_id")
async def get_note(call: Call) -> Response:
    project, mr, problem = _find(call)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    note = _note(mr, call.params["note_id"])
    return JSONResponse(_note_json(project, mr, note, call.api)) if note else not_found("Note")


@routes.route("PUT", "projects/:id/merge_requests/:iid/notes/:note_id")
async def update_note(call: Call) -> Response:
    project, mr, problem = _find(call, write=True)
    if mr is None or project is None:
        return problem  # type: ignore[return-value]
    note = _note(mr, call.params["note_id"])
    if note is None:
        return not_found("Note")
    if (problem := missing_args(call.args, "body") or _too_long(call.args, "body", MAX_NOTE)):
        return problem
    note["body"], note["updated_at"] = str(call.args["body"]), now_iso()
    call.api.save()
    call.api.audit.record("update_note", project=project["path_with_namespace"], iid=mr["iid"],
                          note_id=note["id"])
    return JSONResponse(_note_json(project, mr, note, call.api))
