"""GitLab stand-in: project hooks, and delivery of GitLab's Push Hook payload on each commit
(and of any event's payload, for sandbox/gitlab/merge_requests.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response

from sandbox.gitlab.api import Api, Call, Routes, error, not_found, truthy
from sandbox.gitlab.store import USER, now_iso
from sandbox.http_client import shared_client

routes = Routes()

HOOK_FIELDS = ("url", "push_events", "tag_push_events", "merge_requests_events",
               "enable_ssl_verification", "push_events_branch_filter", "token")

_background: set[asyncio.Task[None]] = set()


def _missing_url(call: Call) -> Response | None:
    if call.args.get("url") in (None, ""):
        return error(400, "url is missing", key="error")
    return None


def _hook_json(project: dict[str, Any], hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k != "token"} | {"project_id": project["id"]}


@routes.route("GET", "projects/:id/hooks")
async def list_hooks(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    return call.api.paginate(call, [_hook_json(project, h) for h in project["hooks"].values()])


@routes.route("POST", "projects/:id/hooks")
async def create_hook(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if (problem := _missing_url(call)) is not None:
        return problem
    url = str(call.args["url"])
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        return error(422, "Invalid url given", key="error")
    hook_id = call.store.next_id("hook")
    hook = {"id": hook_id, "url": url, "push_events": True, "tag_push_events": False,
            "merge_requests_events": False, "enable_ssl_verification": True,
            "push_events_branch_filter": "", "created_at": now_iso()}
    hook.update({k: call.args[k] for k in HOOK_FIELDS if k in call.args})
    for key in ("push_events", "tag_push_events", "merge_requests_events", "enable_ssl_verification"):
        hook[key] = truthy(hook[key])
    project["hooks"][str(hook_id)] = hook
    call.api.save()
    call.api.audit.record("create_hook", project=project["path_with_namespace"], hook_id=hook_id,
                          url=url)
    return JSONResponse(_hook_json(project, hook), status_code=201)


@routes.route("GET", "projects/:id/hooks/:hook_id")
async def get_hook(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    hook = project["hooks"].get(call.params["hook_id"])
    return JSONResponse(_hook_json(project, hook)) if hook else error(404, "404 Not found")


@routes.route("DELETE", "projects/:id/hooks/:hook_id")
async def delete_hook(call: Call) -> Response:
    project = call.project()
    if project is None:
        return not_found("Project")
    if project["hooks"].pop(call.params["hook_id"], None) is None:
        return error(404, "404 Not found")
    call.api.save()
    call.api.audit.record("delete_hook", project=project["path_with_namespace"],
                          hook_id=call.params["hook_id"])
    return Response(status_code=204)


def fire_push_hooks(api: Api, project: dict[str, Any], branch: str, commit: dict[str, Any],
                     before: dict[str, Any] | None) -> None:
    """Deliver GitLab's Push Hook payload to the project's push hooks, in the background."""
    hooks = [dict(h) for h in project["hooks"].values() if h.get("push_events")]
    if not hooks:
        return
    payload = {
        "object_kind": "push", "event_name": "push", "ref": f"refs/heads/{branch}",
        "before": before["id"] if before else "0" * 40, "after": commit["id"],
        "checkout_sha": commit["id"], "user_username": USER["username"], "project_id": project["id"],
        "project": {"id": project["id"], "name": project["name"],
                    "path_with_namespace": project["path_with_namespace"],
                    "git_http_url": f"{api.base_url}/{project['path_with_namespace']}.git",
                    "default_branch": project["default_branch"]},
        "commits": [api.commit_json(project, commit)], "total_commits_count": 1,
    }
    deliver_in_background(api, hooks, "Push Hook", payload)


def deliver_in_background(api: Api, hooks: list[dict[str, Any]], event: str,
                          payload: dict[str, Any]) -> None:
    """POST `payload` to each hook as GitLab's `event` (X-Gitlab-Event), without waiting."""
    for hook in hooks:
        task = asyncio.get_running_loop().create_task(_deliver(api, hook, event, payload))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _deliver(api: Api, hook: dict[str, Any], event: str, payload: dict[str, Any]) -> None:
    headers = {"X-Gitlab-Event": event}
    if hook.get("token"):
        headers["X-Gitlab-Token"] = hook["token"]
    try:
        response = await shared_client().post(hook["url"], json=payload, headers=headers,
                                              timeout=5)
        api.audit.record("deliver_hook", hook_id=hook["id"], url=hook["url"], event=event,
                         status=response.status_code)
    except httpx.HTTPError as e:
        api.audit.record("deliver_hook", hook_id=hook["id"], url=hook["url"], event=event,
                         error=str(e))
