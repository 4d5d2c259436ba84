"""Pod logs in the stand-in: GET /api/v1/namespaces/{ns}/pods/{name}/log with
`container`, `sinceSeconds`, `sinceTime`, `tailLines`, `timestamps`, `follow` and
`limitBytes`, answered as the kubelet would (plain text; a follow streams until the
container ends or the client goes).

The lines are simulated from what the pod is, in the simulation's time: a serving pod
logs its start, then one request line a second whose status follows its image's
error-rate label and whose latency its latency label; a crashing pod logs its panic at
each restart; a Job's pod logs its run and how it ended. So `kepler logs` shows what a
version does, like everything else in the sandbox.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from sandbox.kubernetes.images import CRASH_LABEL, POD_HOOK_LABEL, behaviour, failing_hook
from sandbox.kubernetes.pods import PODS
from sandbox.kubernetes.resources import ApiError, bad_request
from sandbox.kubernetes.store import Store, now_rfc3339, parse_rfc3339

PATHS = ("/api/items", "/api/items/42", "/api/cart", "/healthz", "/api/checkout")
HISTORY_S = 3600  # request lines are kept for the last hour
FOLLOW_POLL_S = 0.2

Line = tuple[float, str]


def _rfc3339_nano(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"


def _roll(uid: str, second: int) -> float:
    return zlib.crc32(f"{uid}:{second}".encode()) % 10000 / 10000


def lines_for(pod: dict[str, Any], container: dict[str, Any], sim: dict[str, Any],
              now: float) -> list[Line]:
    """Every line the container has written up to `now`, oldest first."""
    uid, name = pod["metadata"]["uid"], container["name"]
    state, labels = sim.get("state", "pending"), sim.get("labels") or {}
    started = float(sim.get("started", now))
    if started > now:
        return []
    image = container["image"]
    digest = image.rsplit("@", 1)[-1][:19] if "@" in image else image.rsplit(":", 1)[-1]
    if sim.get("job") is not None and "outcome" in sim:  # a Job's pod
        hook = (pod["metadata"].get("labels") or {}).get(POD_HOOK_LABEL)
        out: list[Line] = [(started, f"{name}: {hook} hook: {' '.join(container.get('command') or [])}"
                            f" (image {digest})" if hook else f"{name}: run started (image {digest})")]
        finished = float(sim["finished"])
        for n in range(1, 4):
            at = started + (finished - started) * n / 4
            if at <= now:
                out.append((at, f"{name}: processed batch {n}/3"))
        if now >= finished:
            out.append((finished, _job_end(pod, sim, name)))
        return out
    if state == "crash":
        out = []
        every = max(1.0, float(sim.get("restart_every", 1.0)))
        t = started
        while t <= now and len(out) < 3000:
            out += [(t, f"{name}: starting (image {digest})"),
                    (t, f"{name}: panic: the image is labelled {CRASH_LABEL}=true"),
                    (t, f"{name}: exit status 1")]
            t += every
        return out
    if state != "running":
        return []
    port = next((p.get("containerPort") for p in container.get("ports") or []), 8080)
    out = [(started, f"{name}: starting (image {digest})"),
           (started, f"{name}: listening on :{port}")]
    error_rate, latency = behaviour(labels)
    ip = (pod.get("status") or {}).get("podIP", "10.244.0.1")
    for second in range(int(max(started, now - HISTORY_S)) + 1, int(now) + 1):
        roll = _roll(uid, second)
        code = 500 if roll < error_rate else 200
        path = PATHS[int(roll * 1000) % len(PATHS)]
        ms = round(latency * (0.5 + roll), 1)
        out.append((float(second), f'{ip} "GET {path} HTTP/1.1" {code} {ms}ms'))
    return out


def _job_end(pod: dict[str, Any], sim: dict[str, Any], name: str) -> str:
    hook = (pod["metadata"].get("labels") or {}).get(POD_HOOK_LABEL)
    if sim["outcome"] == "succeeded":
        return f"{name}: {hook} hook finished: ok" if hook else f"{name}: run finished: ok"
    if failing_hook(pod, sim.get("labels") or {}):
        return (f"{name}: error: {hook} hook failed (kepler-sandbox.yaml hooks.{hook}: fail); "
                "exit status 1")
    return f"{name}: error: run failed ({CRASH_LABEL}=true); exit status 1"


class PodLogs:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.store.get(PODS, namespace, name)

    def _container(self, pod: dict[str, Any], wanted: str | None) -> dict[str, Any]:
        containers = pod["spec"].get("containers") or []
        names = [c["name"] for c in containers]
        if not wanted:
            if len(containers) != 1:
                raise bad_request(f"a container name must be specified for pod "
                                  f"{pod['metadata']['name']}, choose one of: [{' '.join(names)}]")
            return containers[0]
        for c in containers:
            if c["name"] == wanted:
                return c
        raise bad_request(f"container {wanted} is not valid for pod {pod['metadata']['name']}")

    def _sim(self, pod: dict[str, Any]) -> dict[str, Any]:
        return self.store.sim.get("pods", {}).get(pod["metadata"]["uid"], {})

    def _check_started(self, pod: dict[str, Any], container: dict[str, Any],
                       sim: dict[str, Any]) -> None:
        state = sim.get("state", "pending")
        if state == "missing":
            raise bad_request(f'container "{container["name"]}" in pod "{pod["metadata"]["name"]}" '
                              "is waiting to start: trying and failing to pull image")
        if state in ("pending", "starting") or float(sim.get("started", 0)) > time.time():
            raise bad_request(f'container "{container["name"]}" in pod "{pod["metadata"]["name"]}" '
                              "is waiting to start: ContainerCreating")

    async def handle(self, request: Request) -> Response:
        p, q = request.path_params, request.query_params
        try:
            pod = self._pod(p["namespace"], p["name"])
            container = self._container(pod, q.get("container"))
            sim = self._sim(pod)
            self._check_started(pod, container, sim)
            since = _since(q.get("sinceSeconds"), q.get("sinceTime"))
            tail = _int(q.get("tailLines"), "tailLines")
            limit = _int(q.get("limitBytes"), "limitBytes")
        except ApiError as e:
            return JSONResponse(e.status(), status_code=e.code)
        stamps = (q.get("timestamps") or "").lower() in ("true", "1")
        now = time.time()
        lines = [ln for ln in lines_for(pod, container, sim, now) if since is None or ln[0] >= since]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        render = (lambda ln: f"{_rfc3339_nano(ln[0])} {ln[1]}\n") if stamps else (
            lambda ln: ln[1] + "\n")
        if (q.get("follow") or "").lower() not in ("true", "1"):
            text = "".join(render(ln) for ln in lines)
            return PlainTextResponse(text[:limit] if limit is not None else text)
        return StreamingResponse(self._follow(request, pod, container, lines, now, render),
                                 media_type="text/plain")

    async def _follow(self, request: Request, pod: dict[str, Any], container: dict[str, Any],
                      first: list[Line], now: float, render: Any) -> AsyncIterator[bytes]:
        for ln in first:
            yield render(ln).encode()
        seen = now
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        while True:
            await asyncio.sleep(FOLLOW_POLL_S)
            if await request.is_disconnected():
                return
            current = self.store.find(PODS, *key)
            if current is None or current["metadata"]["uid"] != pod["metadata"]["uid"]:
                return
            now = time.time()
            sim = self._sim(current)
            for ln in lines_for(current, container, sim, now):
                if seen < ln[0] <= now:
                    yield render(ln).encode()
            seen = now
            if sim.get("state") in ("succeeded", "failed"):
                return


def _int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer {value!r}") from None
    if n < 0:
        raise bad_request(f"{name}: must be non-negative")
    return n


def _since(seconds: str | None, since_time: str | None) -> float | None:
    if seconds is not None:
        n = _int(seconds, "sinceSeconds")
        if n == 0:
            raise bad_request("sinceSeconds: must be greater than 0")
        return time.time() - float(n or 0)
    if since_time:
        try:
            return parse_rfc3339(since_time)
        except ValueError:
            raise bad_request(f"sinceTime: invalid time {since_time!r}") from None
    return None


__all__ = ["PodLogs", "lines_for", "now_rfc3339"]
