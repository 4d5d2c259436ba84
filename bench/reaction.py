"""Figure 4: how fast Kepler reacts to a human.

- approve: from sending the signed `approve` update (client clock, after signing, as
  `kepler approve` sends it) to the start of the deploy activity
  (kubernetes.deploy_release's ActivityTaskStarted event time; same machine, same clock):
  the server's hop, the workflow verifying the signature, the steps before the apply; for a
  prod release (approval required) of what staging runs, image cached;
- abort: from sending `abort` to a canary at 10 % until the sandbox's VirtualService routes
  100 % to stable (polled every 10 ms over HTTP, as any client of the cluster would see it)."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timedelta, timezone

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from bench.common import Figure, Stack, cached_commits, create_services, history, release
from kepler.canary import CanaryControl
from kepler.models import CanaryRequest, ReleaseRequest
from kepler.clients import operations as ops
from kepler.contracts import STATUS
from starter.canary import control_signer
from kepler import naming
from kepler.identity import PERSON
from kepler.models import ApprovalDecision
from starter.signing import sign, sign_request, signing_key

SERVICE = "react"
APPROVE_TARGET_MS, ABORT_TARGET_S = 50.0, 0.5


async def _until_stage(st: Stack, workflow_id: str, check: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    handle = st.client.get_workflow_handle(workflow_id)
    while time.monotonic() < deadline:
        status = await ops.query(handle, STATUS)
        if status.stage == check:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{workflow_id} never reached {check!r}")


def _started_at(events: list, activity_type: str) -> tuple[datetime, datetime]:
    """(scheduled, started) times of the first activity of that type."""
    scheduled = {e.event_id: e for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type}
    for e in events:
        if (e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and
                e.activity_task_started_event_attributes.scheduled_event_id in scheduled):
            s = scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
            return s.event_time.ToDatetime(timezone.utc), e.event_time.ToDatetime(timezone.utc)
    raise LookupError(f"no started {activity_type}")


async def send_approval(st: Stack, approver: str) -> datetime:
    """What `kepler approve` does (starter/signing.py decide), timed from the update's send."""
    state = await ops.status(st.client, naming.workflow_id(SERVICE, "prod"))
    statement = ops.approval_statement(state, "approve", "", datetime.now(timezone.utc))
    signed = await asyncio.to_thread(sign, statement, signing_key(st.platform, approver), PERSON)
    sent = datetime.now(timezone.utc)
    await ops.decide(st.client, SERVICE, "prod", "approve",
                     ApprovalDecision(approver=approver, comment="", signed=signed))
    return sent


async def approve_to_deploy(st: Stack, commits: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds from sending the signed approve update to the deploy activity's start,
    and from its scheduling to its start (the task queue's share)."""
    to_deploy, queued = [], []
    for n in range(runs):
        await release(st, SERVICE, commits[n % 2])  # prod takes only what staging runs
        started = await ops.start(st.client, sign_request(st.platform, ReleaseRequest(
            service=SERVICE, env="prod", ref=commits[n % 2], requested_by="carol")), st.queue)
        await _until_stage(st, started.workflow_id, "awaiting approval")
        sent = await send_approval(st, "alice")
        assert (await started.handle.result()).outcome == "succeeded"
        events = await history(st.client, started.workflow_id, started.run_id)
        scheduled, started_at = _started_at(events, "kubernetes.deploy_release")
        to_deploy.append((started_at - sent).total_seconds() * 1000)
        queued.append((started_at - scheduled).total_seconds() * 1000)
    return to_deploy, queued


def _stable(vs: dict) -> bool:
    primary = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    return [d.get("weight", 0) for d in primary["route"]] == [100, 0]


async def abort_to_stable(st: Stack, commits: list[str], runs: int) -> list[float]:
    url = (f"{st.urls['kubernetes']}/apis/networking.istio.io/v1/namespaces/{SERVICE}-staging/"
           f"virtualservices/{SERVICE}")
    seconds = []
    bob = control_signer(st.platform, "bob")
    async with httpx.AsyncClient(timeout=5) as http:
        for n in range(runs):
            started = await ops.start(st.client, CanaryRequest(
                service=SERVICE, env="staging", ref=commits[(n + 1) % 2], requested_by="carol",
                steps=[10, 20, 50], interval=timedelta(seconds=30)), st.queue)
            await _until_stage(st, started.workflow_id, "canary 10%")
            assert not _stable((await http.get(url)).json())
            t0 = time.perf_counter()
            await ops.control(st.client, SERVICE, "staging", "abort", CanaryControl(by="bob"),
                              bob)  # signed, as `kepler abort` does
            while not _stable((await http.get(url)).json()):
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError("traffic never went back to stable")
                await asyncio.sleep(0.01)
            seconds.append(time.perf_counter() - t0)
            try:
                await started.handle.result()
            except WorkflowFailureError:
                pass  # aborted, as asked
    return seconds


async def measure(st: Stack, runs: int = 5) -> list[Figure]:
    await create_services(st, [SERVICE])
    commits = await cached_commits(st, SERVICE, 2)
    await release(st, SERVICE, commits[0])  # the primary a canary starts from
    to_deploy, queued = await approve_to_deploy(st, commits, runs)
    aborts = await abort_to_stable(st, commits, 3)
    return [
        Figure("reaction: approve -> deploy activity start (p50)", statistics.median(to_deploy),
               "ms", f"<= {APPROVE_TARGET_MS:.0f} ms", statistics.median(to_deploy) <= APPROVE_TARGET_MS,
               note=f"{runs} prod releases; max {max(to_deploy):.0f} ms; the deploy activity "
               f"scheduled -> started: p50 {statistics.median(queued):.0f} ms"),
        Figure("reaction: abort -> VirtualService 100% stable (median)", statistics.median(aborts),
               "s", f"<= {ABORT_TARGET_S} s", statistics.median(aborts) <= ABORT_TARGET_S,
               note=f"3 canaries aborted at 10%; max {max(aborts):.2f} s"),
    ]
