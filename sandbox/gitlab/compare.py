"""GitLab stand-in: comparing two refs (GET projects/:id/repository/compare), as GitLab
answers it: the commits reachable from `to` and not from `from` (oldest first; `from`
need not be an ancestor: the walk stops at the first commit `from`'s history holds), and
each changed file's unified diff between the two trees."""

from __future__ import annotations

import difflib

from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Call, Routes, missing_args, not_found

routes = Routes()
MAX_DIFF_LINES = 5000  # a file's diff beyond this is left out, as GitLab collapses it


def _diff(before: bytes | None, after: bytes | None, path: str) -> str:
    old = (before or b"").decode(errors="replace").splitlines(keepends=True)
    new = (after or b"").decode(errors="replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(old, new, n=3))[2:]  # GitLab's diff starts at the hunk
    return "".join(lines[:MAX_DIFF_LINES])


@routes.route("GET", "projects/:id/repository/compare")
async def compare(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if (problem := missing_args(call.args, "from", "to")) is not None:
        return problem
    source = call.store.commit(project, str(call.args["from"]))
    target = call.store.commit(project, str(call.args["to"]))
    if source is None or target is None:
        return not_found("Ref")
    known = {c["id"] for c in call.store.history(project, source)}
    commits = []
    for c in call.store.history(project, target):
        if c["id"] in known:
            break
        commits.append(c)
    before, after = call.store.files(source), call.store.files(target)
    diffs = [{"old_path": path, "new_path": path, "a_mode": "100644" if path in before else "0",
              "b_mode": "100644" if path in after else "0", "new_file": path not in before,
              "renamed_file": False, "deleted_file": path not in after,
              "diff": _diff(before.get(path), after.get(path), path)}
             for path in sorted(set(before) | set(after)) if before.get(path) != after.get(path)]
    return JSONResponse({
        "commit": call.api.commit_json(project, commits[0]) if commits else None,
        "commits": [call.api.commit_json(project, c) for c in reversed(commits)],
        "diffs": diffs, "compare_timeout": False, "compare_same_ref": source["id"] == target["id"],
        "web_url": call.api.web_url(f"{project['path_with_namespace']}/-/compare/"
                                    f"{source['id']}...{target['id']}")})
