"""The approval page: what exactly would change if this gate is approved — the commits
between what is live and the candidate and the config diff (GitLab), the digests, the hooks
that will run, the requester and the policy — and Approve / Reject, signed with a passkey.
Once decided, the same URL shows the operation going on to its end."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.service import RPCError

from kepler import naming
from kepler.clients import operations as operations_client
from kepler.clients.gitlab import Comparison
from kepler.models import OperationStatus
from kepler.promotion import LiveRelease
from kepler.spec import SPEC_PATH, ServiceSpec
from starter.console.app import Console, Page, service_and_env
from starter.console.auth import Viewer
from starter.promotion import live_in


async def state_of(console: Console, service: str, env: str) -> OperationStatus | None:
    """The operation on <service>@<env> as its STATUS query says (None: none ever ran)."""
    client = await console.client.get()
    try:
        return await operations_client.status(client, naming.workflow_id(service, env))
    except RPCError:
        return None


async def changes(console: Console, service: str, live: str,
                  candidate: str) -> tuple[Comparison | None, str]:
    """What GitLab says changed from `live` to `candidate` (kept: commits never change), or
    why it cannot say."""
    if not live or not candidate:
        return None, "" if candidate else "the gate names no commit"
    key = ("compare", service, live, candidate)
    if key not in console.cache:
        try:
            console.remember(key, await asyncio.to_thread(console.gitlab.compare, service, live,
                                                          candidate))
        except Exception as e:  # noqa: BLE001 - GitLab down: the page says so, and still decides
            return None, f"GitLab: {type(e).__name__}: {str(e)[:200]}"
    return console.cache[key], ""


async def spec_at(console: Console, service: str, sha: str) -> ServiceSpec | None:
    key = ("spec", service, sha)
    if sha and key not in console.cache:
        console.remember(key, await asyncio.to_thread(console.gitlab.spec_at, service, sha))
    return console.cache.get(key)


async def data(console: Console, viewer: Viewer, params: dict[str, str],
               query: dict[str, str]) -> dict[str, Any]:
    service, env = service_and_env(console, params)
    state = await state_of(console, service, env)
    pending = state.pending_approval if state else None
    live: LiveRelease | None = None
    comparison, compare_error, spec = None, "", None
    if pending is not None:
        live = await asyncio.to_thread(live_in, console.platform, console.clusters, service, env)
        candidate = pending.commits[0] if pending.commits else ""
        (comparison, compare_error), spec = await asyncio.gather(
            changes(console, service, live.commit, candidate), spec_at(console, service, candidate))
    config = [d for d in comparison.diffs if d.path == SPEC_PATH] if comparison else []
    code = [d for d in comparison.diffs if d.path != SPEC_PATH] if comparison else []
    return {"title": f"Approval: {service} in {env}", "service": service, "env": env,
            "state": state, "pending": pending, "live": live, "comparison": comparison,
            "compare_error": compare_error,
            "config_diffs": config, "code_diffs": code, "hooks": spec.hooks if spec else None,
            "spec_read": spec is not None, "can_decide": bool(
                pending and viewer.person in pending.approvers
                and viewer.person != (state.requested_by if state else ""))}


PAGE = Page("/services/{service}/{env}/approval", "approval.html", data)
