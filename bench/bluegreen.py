"""Figure: how fast a blue-green release switches and switches back, as a user sees it.

- switch: from a signed `promote` during the preview analysis (the operator says "switch
  now") until the sandbox's VirtualService routes 100 % to the new version;
- switch-back: from a signed `abort` in the rollback window (what `kepler rollback` sends)
  until it routes 100 % to the old version again.
Each polled every 10 ms over HTTP, as any client of the cluster would see it."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import yaml
from temporalio.client import WorkflowFailureError

from bench.common import Figure, Stack, cached_commits, create_services, release
from bench.reaction import _until_stage
from kepler.canary import CanaryControl
from kepler.clients import operations as ops
from kepler.models import ReleaseRequest
from starter.canary import control_signer

SERVICE = "bluegreen"
TARGET_S = 2.0
SPEC = {"name": SERVICE, "team": "bench", "replicas": 1,
        "blue_green": {"preview_analysis": 50, "interval": "1m", "rollback_window": "1h"}}


def _primary(vs: dict) -> list[int]:
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return [d.get("weight", 0) for d in route["route"]]


async def _until_routed(http: httpx.AsyncClient, url: str, weights: list[int], t0: float) -> float:
    while _primary((await http.get(url)).json()) != weights:
        if time.perf_counter() - t0 > 30:
            raise TimeoutError(f"the VirtualService never routed {weights}")
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


def _spec_commit(st: Stack) -> None:
    project = st.gitlab.projects.get(f"demo/{SERVICE}")
    project.commits.create({"branch": "main", "commit_message": "blue-green settings", "actions": [
        {"action": "update", "file_path": ".kepler/service.yaml", "content": yaml.safe_dump(SPEC)}]})


async def switch_and_back(st: Stack, commits: list[str], runs: int) -> tuple[list[float], list[float]]:
    url = (f"{st.urls['kubernetes']}/apis/networking.istio.io/v1/namespaces/{SERVICE}-staging/"
           f"virtualservices/{SERVICE}")
    bob = control_signer(st.platform, "bob")
    switches, backs = [], []
    async with httpx.AsyncClient(timeout=5) as http:
        for n in range(runs):
            started = await ops.start(st.client, ReleaseRequest(
                service=SERVICE, env="staging", ref=commits[(n + 1) % 2], strategy="blue-green",
                requested_by="carol"), st.queue)
            await _until_stage(st, started.workflow_id, "analysing the preview")
            t0 = time.perf_counter()
            await ops.control(st.client, SERVICE, "staging", "promote", CanaryControl(by="bob"), bob)
            switches.append(await _until_routed(http, url, [0, 100], t0))
            await _until_stage(st, started.workflow_id, "rollback window")
            t0 = time.perf_counter()
            await ops.control(st.client, SERVICE, "staging", "abort", CanaryControl(by="bob"), bob)
            backs.append(await _until_routed(http, url, [100, 0], t0))
            try:
                await st.client.get_workflow_handle(started.workflow_id).result()
            except WorkflowFailureError:
                pass  # rolled_back: switched back, as asked
    return switches, backs


async def measure(st: Stack, runs: int = 5) -> list[Figure]:
    await create_services(st, [SERVICE])
    await asyncio.to_thread(_spec_commit, st)
    commits = await cached_commits(st, SERVICE, 2)
    await release(st, SERVICE, commits[0])  # the live version (a first release rolls in place)
    switches, backs = await switch_and_back(st, commits, runs)
    return [
        Figure("blue-green: promote -> VirtualService 100% new (p50)", statistics.median(switches),
               "s", f"<= {TARGET_S:.0f} s", statistics.median(switches) <= TARGET_S,
               note=f"{runs} switches; max {max(switches):.2f} s"),
        Figure("blue-green: rollback in the window -> 100% old (p50)", statistics.median(backs),
               "s", f"<= {TARGET_S:.0f} s", statistics.median(backs) <= TARGET_S,
               note=f"{runs} switch-backs, the old version warm; max {max(backs):.2f} s"),
    ]
