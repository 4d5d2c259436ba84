"""Figure: a merge request's push until its preview runs the new commit.

From the push (a commit to the merge request's source branch through GitLab's API) until
`kepler preview show` would say the preview runs that commit: the stand-in delivers its
Merge Request Hook to the receiver (`kepler preview hooks`, served here on loopback), which
signals the Preview workflow; it reads the merge request, finds the commit's image (the sandbox's Jenkins builds it), deploys it in the preview's namespace and waits
for the rollout."""

from __future__ import annotations

import asyncio
import statistics
import time

from pydantic import SecretStr

from bench.common import Figure, Stack, create_services
from kepler.contracts import STATUS
from kepler.clients import operations as ops
from kepler.previews import preview_workflow_id
from kepler.settings import Secrets
from starter.preview_hooks import create_app
from tests.cli.test_preview_hooks import PATH, serving

SERVICE = "preview"
TOKEN = "bench-hook-token"
TARGET_S = 5.0


async def _deployed(st: Stack, workflow_id: str, sha: str, t0: float) -> float:
    handle = st.client.get_workflow_handle(workflow_id)
    while time.perf_counter() - t0 < 60:
        try:
            status = await ops.query(handle, STATUS)
            if status.preview and status.preview.deployed_sha == sha:
                return time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - not started yet
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{workflow_id} never ran {sha[:12]}")


async def push_to_preview(st: Stack, runs: int) -> list[float]:
    project = st.gitlab.projects.get(f"demo/{SERVICE}")
    project.branches.create({"branch": "feature", "ref": "main"})
    seconds = []
    with serving(create_app(st.platform, Secrets(gitlab_hook_token=SecretStr(TOKEN)))) as base:
        project.hooks.create({"url": f"{base}{PATH}", "merge_requests_events": True, "token": TOKEN})
        mr = await asyncio.to_thread(project.mergerequests.create, {
            "source_branch": "feature", "target_branch": "main", "title": "bench"})
        workflow_id = preview_workflow_id(SERVICE, mr.iid)
        await _deployed(st, workflow_id, project.branches.get("feature").commit["id"],
                        time.perf_counter())
        for n in range(runs):
            t0 = time.perf_counter()
            commit = await asyncio.to_thread(project.commits.create, {
                "branch": "feature", "commit_message": f"p{n}", "actions": [
                    {"action": "create", "file_path": f"p{n}.txt", "content": str(n)}]})
            seconds.append(await _deployed(st, workflow_id, commit.id, t0))
        mr.state_event = "close"
        await asyncio.to_thread(mr.save)
    return seconds


async def measure(st: Stack, runs: int = 5) -> list[Figure]:
    await create_services(st, [SERVICE])
    pushes = await push_to_preview(st, runs)
    return [Figure("preview: push -> preview runs it (p50)", statistics.median(pushes), "s",
                   f"<= {TARGET_S:.0f} s", statistics.median(pushes) <= TARGET_S,
                   note=f"{runs} pushes to one merge request, each built by the sandbox's Jenkins; "
                   f"max {max(pushes):.2f} s")]
