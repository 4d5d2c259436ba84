"""GitLab stand-in: repository files, commits, tree and archive."""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hashlib
import io
import tarfile
from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Call, Routes, error, missing_args, not_found, truthy
from sandbox.gitlab.merge_requests import pushed
from sandbox.gitlab.store import REF_RE, USER, GitLabStore

ACTIONS = ("create", "update", "delete", "move", "chmod")

routes = Routes()


def _decode(content: Any, encoding: Any) -> bytes:
    if str(encoding or "text") == "base64":
        return base64.b64decode(str(content or ""), validate=True)
    return str(content or "").encode()


def _apply_action(store: GitLabStore, tree: dict[str, str], action: dict[str, Any]) -> Response | None:
    """Change `tree` as one commit action asks; the error answer if it cannot."""
    kind, path = action.get("action"), str(action.get("file_path") or "")
    if kind not in ACTIONS or not path:
        return error(400, "actions[0][action] does not have a valid value"
                     if kind not in ACTIONS else "actions[0][file_path] is missing", key="error")
    try:
        content = _decode(action.get("content"), action.get("encoding"))
    except (binascii.Error, ValueError):
        return error(400, "content is not valid base64", key="error")
    if kind == "create":
        if path in tree:
            return error(400, "A file with this name already exists")
        tree[path] = store.put_blob(content)
    elif kind in ("update", "delete", "chmod"):
        if path not in tree:
            return error(400, "A file with this name doesn't exist")
        if kind == "update":
            tree[path] = store.put_blob(content)
        elif kind == "delete":
            del tree[path]
    else:  # move
        previous = str(action.get("previous_path") or "")
        if previous not in tree:
            return error(400, "A file with this name doesn't exist")
        if path in tree:
            return error(400, "A file with this name already exists")
        blob = tree.pop(previous)
        tree[path] = store.put_blob(content) if action.get("content") is not None else blob
    return None


def commit_actions(call: Call, project: dict[str, Any], branch: str, message: str,
                   actions: list[dict[str, Any]]) -> Response | dict[str, Any]:
    """Apply `actions` on top of `branch` (or start_branch/start_sha) as one new commit."""
    store, args = call.store, call.args
    head = store.commit(project, branch) if branch in project["branches"] else None
    if head is None and project["commits"]:
        start = args.get("start_branch") or args.get("start_sha")
        head = store.commit(project, str(start)) if start else None
        if head is None:
            return error(400, "You can only create or edit files when you are on a branch")
    tree = dict(head["tree"]) if head else {}
    for action in actions:
        if (problem := _apply_action(store, tree, action)) is not None:
            return problem
    commit = store.add_commit(project, branch, tree, message, head,
                              str(args.get("author_name") or USER["name"]),
                              str(args.get("author_email") or USER["email"]))
    call.api.save()
    call.api.audit.record("commit", project=project["path_with_namespace"], branch=branch,
                          sha=commit["id"], files=sorted(str(a.get("file_path")) for a in actions))
    pushed(call.api, project, branch, commit, head)
    return commit


# ---- files ------------------------------------------------------------------------


@routes.route("GET", "projects/:id/repository/files/:file_path")
async def get_file(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if problem := missing_args(call.args, "ref"):
        return problem
    store = call.store
    commit = store.commit(project, str(call.args["ref"]))
    path = call.params["file_path"]
    if commit is None:
        return not_found("Commit")
    if path not in commit["tree"]:
        return not_found("File")
    content = store.blob(commit["tree"][path])
    last = commit  # the oldest commit in the unbroken run holding this blob
    for c in store.history(project, commit):
        if c["tree"].get(path) != commit["tree"][path]:
            break
        last = c
    return JSONResponse({
        "file_name": path.rsplit("/", 1)[-1], "file_path": path, "size": len(content),
        "encoding": "base64", "content": base64.b64encode(content).decode(),
        "content_sha256": hashlib.sha256(content).hexdigest(), "ref": call.args["ref"],
        "blob_id": commit["tree"][path], "commit_id": commit["id"], "last_commit_id": last["id"],
        "execute_filemode": False})


@routes.route("GET", "projects/:id/repository/files/:file_path/raw")
async def raw_file(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    commit = call.store.commit(project, str(call.args.get("ref") or project["default_branch"]))
    path = call.params["file_path"]
    if commit is None or path not in commit["tree"]:
        return not_found("File")
    return Response(call.store.blob(commit["tree"][path]), media_type="text/plain; charset=utf-8",
                    headers={"X-Gitlab-File-Path": path, "X-Gitlab-Commit-Id": commit["id"]})


async def _write_file(call: Call, kind: str) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    required = ("branch", "commit_message") if kind == "delete" else ("branch", "content", "commit_message")
    args = call.args
    if (problem := missing_args(args, *required)) is not None:
        return problem
    path = call.params["file_path"]
    action = {"action": kind, "file_path": path, "content": args.get("content"),
              "encoding": args.get("encoding")}
    result = commit_actions(call, project, str(args["branch"]), str(args["commit_message"]), [action])
    if isinstance(result, Response):
        return result
    if kind == "delete":
        return Response(status_code=204)
    return JSONResponse({"file_path": path, "branch": args["branch"]},
                        status_code=201 if kind == "create" else 200)


@routes.route("POST", "projects/:id/repository/files/:file_path")
async def create_file(call: Call) -> Response:
    return await _write_file(call, "create")


@routes.route("PUT", "projects/:id/repository/files/:file_path")
async def update_file(call: Call) -> Response:
    return await _write_file(call, "update")


@routes.route("DELETE", "projects/:id/repository/files/:file_path")
async def delete_file(call: Call) -> Response:
    return await _write_file(call, "delete")


def _tree_entry(path: str, name: str) -> dict[str, Any]:
    return {"id": hashlib.sha1(path.encode()).hexdigest(), "name": name, "type": "tree",
            "path": path, "mode": "040000"}


@routes.route("GET", "projects/:id/repository/tree")
async def tree(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    commit = call.store.commit(project, str(call.args.get("ref") or project["default_branch"]))
    if commit is None:
        return not_found("Tree")
    base = str(call.args.get("path") or "").strip("/")
    prefix = f"{base}/" if base else ""
    recursive = truthy(call.args.get("recursive"))
    entries: dict[str, dict[str, Any]] = {}
    for path, blob in commit["tree"].items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts) if recursive else min(len(parts), 1)):
            sub = prefix + "/".join(parts[:depth])
            entries.setdefault(sub, _tree_entry(sub, parts[depth - 1]))
        if recursive or len(parts) == 1:
            entries[path] = {"id": blob, "name": parts[-1], "type": "blob", "path": path, "mode": "100644"}
        else:
            sub = prefix + parts[0]
            entries.setdefault(sub, _tree_entry(sub, parts[0]))
    return call.api.paginate(call, [entries[k] for k in sorted(entries)])


# ---- commits ----------------------------------------------------------------------


@routes.route("GET", "projects/:id/repository/commits")
async def list_commits(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if not project["commits"]:
        return call.api.paginate(call, [])
    head = call.store.commit(project, str(call.args.get("ref_name") or project["default_branch"]))
    if head is None:
        return not_found("Commit")
    commits = call.store.history(project, head)
    if path := call.args.get("path"):
        commits = [c for i, c in enumerate(commits) if c["tree"].get(path) != (
            commits[i + 1]["tree"].get(path) if i + 1 < len(commits) else None)]
    return call.api.paginate(call, [call.api.commit_json(project, c) for c in commits])


@routes.route("GET", "projects/:id/repository/commits/:sha")
async def get_commit(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    commit = call.store.commit(project, call.params["sha"])
    if commit is None:
        return not_found("Commit")
    parent = project["commits"].get(commit["parent_ids"][0]) if commit["parent_ids"] else None
    before = parent["tree"] if parent else {}
    changed = {p for p in set(before) | set(commit["tree"]) if before.get(p) != commit["tree"].get(p)}
    return JSONResponse({**call.api.commit_json(project, commit), "status": None, "last_pipeline": None,
                         "stats": {"additions": len(changed), "deletions": 0, "total": len(changed)}})


@routes.route("POST", "projects/:id/repository/commits")
async def create_commit(call: Call) -> Response:
    project, problem = call.writable_project()
    if project is None:
        return problem  # type: ignore[return-value]
    if (problem := missing_args(call.args, "branch", "commit_message", "actions")) is not None:
        return problem
    actions = call.args["actions"]
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        return error(400, "actions is invalid", key="error")
    branch = str(call.args["branch"])
    if not REF_RE.match(branch):
        return error(400, "Branch name is invalid")
    result = commit_actions(call, project, branch, str(call.args["commit_message"]), actions)
    if isinstance(result, Response):
        return result
    return JSONResponse(call.api.commit_json(project, result), status_code=201)


# ---- archive ----------------------------------------------------------------------


async def archive(call: Call, suffix: str) -> Response:
    """The tree at `sha` (default branch) as a tarball; `suffix` is .tar or .tar.gz."""
    project = call.project()
    if project is None:
        return not_found("Project")
    ref = str(call.args.get("sha") or project["default_branch"])
    commit = call.store.commit(project, ref)
    if commit is None:
        return not_found("File")
    top = f"{project['path']}-{ref.replace('/', '-')}-{commit['id']}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, blob in commit["tree"].items():
            data = call.store.blob(blob)
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue() if suffix == ".tar" else gzip.compress(buf.getvalue(), mtime=0)
    return Response(body, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{top}{suffix}"'})


for _name, _suffix in (("archive", ".tar.gz"), ("archive.tar.gz", ".tar.gz"),
                       ("archive.tar", ".tar"), ("archive.tgz", ".tar.gz")):
    routes.route("GET", f"projects/:id/repository/{_name}")(functools.partial(archive, suffix=_suffix))
