"""The merge request hook receiver (starter/preview_hooks.py) with the real Temporal dev
server and a stand-in "Preview" workflow of this test's own that records its signals (the
real one lives in workflows/): requests through ASGI for authentication, bounds and what is
ignored; then the GitLab stand-in's own Merge Request Hook deliveries, to the receiver served
by uvicorn on loopback, open, update and close a preview."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import gitlab
import httpx
import pytest
import uvicorn
import yaml
from pydantic import SecretStr
from starlette.applications import Starlette
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from kepler.previews import MergeRequestEvent, PreviewReport, PreviewRequest
from kepler.settings import Platform, Secrets, parse_platform
from sandbox.serve import Sandbox
from starter.preview_hooks import NotConfigured, create_app
from tests.conftest import platform_yaml
from tests.helpers import free_port, sandbox_fixture, wait_until
from tests.sandbox.test_gitlab import create_from_template
from tests.sandbox.test_gitlab_merge_requests import commit_to
from tests.workers import wait_for

TOKEN = "gl-hook-s3cret"
PATH = "/gitlab/merge-requests"
HEAD = "a" * 40
UNUSED = "http://127.0.0.1:1"
box = sandbox_fixture("preview-hooks", standins=("gitlab",))


@workflow.defn(name="Preview")
class RecordingPreview:
    """The Preview workflow's contract as the receiver sees it: PreviewRequest in, the
    merge_request signal; it ends on merge or close, as the real one may."""

    def __init__(self) -> None:
        self.events: list[MergeRequestEvent] = []

    @workflow.run
    async def run(self, req: PreviewRequest) -> PreviewReport:
        await workflow.wait_condition(lambda: any(e.action in ("merge", "close")
                                                  for e in self.events))
        return PreviewReport(service=req.service, mr=req.mr, outcome="ended")

    @workflow.signal(name="merge_request")
    def merge_request(self, event: MergeRequestEvent) -> None:
        self.events.append(event)

    @workflow.query(name="events")
    def recorded(self) -> list[MergeRequestEvent]:
        return self.events


def make_platform(box: Sandbox, temporal: str, queue: str, previews_env: str | None) -> Platform:
    data = yaml.safe_load(platform_yaml({"jenkins": UNUSED, "registry": UNUSED, **box.urls},
                                        temporal, queue))
    data["previews"] = {"env": previews_env}
    return parse_platform(yaml.safe_dump(data))


def address(dev_env: Any) -> str:
    return dev_env.client.service_client.config.target_host


def secrets(token: str | None = TOKEN) -> Secrets:
    return Secrets(gitlab_hook_token=SecretStr(token) if token is not None else None)


def hook_payload(path: str = "demo/shop", iid: int = 7, action: str = "open",
                 sha: str | None = HEAD) -> dict[str, Any]:
    """The parts of GitLab's Merge Request Hook the receiver reads, and some it does not."""
    return {"object_kind": "merge_request", "event_type": "merge_request",
            "user": {"username": "carol"},
            "project": {"id": 1, "path_with_namespace": path},
            "object_attributes": {"iid": iid, "action": action, "state": "opened",
                                  "source_branch": "feature", "target_branch": "main",
                                  "last_commit": {"id": sha} if sha else None}}


@pytest.fixture
async def queue(dev_env: Any) -> Any:
    name = f"previews-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=name, workflows=[RecordingPreview],
                      workflow_runner=UnsandboxedWorkflowRunner()):  # the stand-in lives here
        yield name


def asgi(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks")


async def post(http: httpx.AsyncClient, payload: Any, token: str | None = TOKEN,
               event: str = "Merge Request Hook") -> httpx.Response:
    headers = {"X-Gitlab-Event": event, "Content-Type": "application/json"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await http.post(PATH, content=body, headers=headers)


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def events_of(client: Client, workflow_id: str, count: int) -> list[MergeRequestEvent]:
    """The preview's first `count` recorded events, waited for."""
    async def check() -> list[MergeRequestEvent] | None:
        try:
            got = await client.get_workflow_handle(workflow_id).query(
                "events", result_type=list[MergeRequestEvent])
        except RPCError:
            return None
        return got if len(got) >= count else None
    return await wait_for(check, timeout=30, what=f"{count} events of {workflow_id}")


def test_no_token_no_receiver(box: Sandbox) -> None:
    platform = make_platform(box, "127.0.0.1:1", "unused", "staging")
    for token in (None, ""):
        with pytest.raises(NotConfigured, match="KEPLER_GITLAB_HOOK_TOKEN"):
            create_app(platform, secrets(token))


async def test_refusals_and_what_is_ignored(box: Sandbox, dev_env: Any, queue: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kepler.previews")
    platform = make_platform(box, address(dev_env), queue, "staging")
    async with asgi(create_app(platform, secrets(), dev_env.client)) as http:
        assert (await http.get("/healthz")).text == "ok"
        for token in (None, "wrong", TOKEN + "x", ""):
            r = await post(http, hook_payload(), token=token)
            assert r.status_code == 401, token
        assert not await exists(dev_env.client, "preview/shop/7")  # nothing was started

        big = json.dumps({**hook_payload(), "padding": "x" * 300 * 1024}).encode()
        r = await post(http, big)
        assert r.status_code == 413 and "256 KiB" in r.json()["error"]

        async def chunks() -> Any:  # no Content-Length: refused as it grows past the bound
            for _ in range(300):
                yield b" " * 1024
        r = await http.post(PATH, content=chunks(), headers={
            "X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": TOKEN})
        assert r.status_code == 413
        r = await post(http, b"{not json")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        r = await post(http, b"[1, 2]")
        assert r.status_code == 400
        bad = hook_payload()
        del bad["object_attributes"]["iid"]
        r = await post(http, bad)
        assert r.status_code == 400 and "object_attributes.iid" in r.json()["error"]
        r = await post(http, hook_payload(iid="7"))  # type: ignore[arg-type]
        assert r.status_code == 400 and "object_attributes.iid" in r.json()["error"]

        async def reason(payload: Any, event: str = "Merge Request Hook") -> str:
            r = await post(http, payload, event=event)
            assert r.status_code == 200 and r.json()["result"] == "ignored", r.text
            return r.json()["reason"]

        assert "not a merge request hook: Push Hook" in await reason({"object_kind": "push"},
                                                                     event="Push Hook")
        assert "object_kind is note" in await reason({**hook_payload(), "object_kind": "note"})
        assert "not in group demo" in await reason(hook_payload(path="others/shop"))
        assert "not in group demo" in await reason(hook_payload(path="shop"))
        assert "not a service name" in await reason(hook_payload(path="demo/Shop_2"))
        assert "nothing for a preview to do" in await reason(hook_payload(action="approved"))
        assert "nothing for a preview to do" in await reason(hook_payload(action=""))
        assert "no preview runs" in await reason(hook_payload(action="close"))
        assert "no preview runs" in await reason(hook_payload(action="merge"))
    assert not await exists(dev_env.client, "preview/shop/7")

    off = make_platform(box, address(dev_env), queue, None)
    async with asgi(create_app(off, secrets(), dev_env.client)) as http:
        r = await post(http, hook_payload())
        assert r.json() == {"result": "ignored",
                            "reason": "previews are off (no previews.env in kepler.yaml)"}
    assert not await exists(dev_env.client, "preview/shop/7")

    unreachable = make_platform(box, "127.0.0.1:1", queue, "staging")
    async with asgi(create_app(unreachable, secrets())) as http:
        r = await post(http, hook_payload())
        assert r.status_code == 503 and "Temporal unavailable" in r.json()["error"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("refused an unauthenticated hook" in m for m in messages)
    assert any(m.startswith("previews: demo/shop!7 approved") and "ignored" in m for m in messages)
    assert not any(TOKEN in m for m in messages)


async def test_an_open_starts_the_preview_and_a_redelivery_signals_it(
        box: Sandbox, dev_env: Any, queue: str) -> None:
    platform = make_platform(box, address(dev_env), queue, "staging")
    async with asgi(create_app(platform, secrets(), dev_env.client)) as http:
        first = await post(http, hook_payload(path="demo/cart", iid=3))
        again = await post(http, hook_payload(path="demo/cart", iid=3, action="update", sha=None))
    assert first.json()["result"] == again.json()["result"] == "signalled"
    assert first.json()["workflow_id"] == again.json()["workflow_id"] == "preview/cart/3"
    assert first.json()["run_id"] == again.json()["run_id"]
    events = await events_of(dev_env.client, "preview/cart/3", 2)
    assert [(e.action, e.sha) for e in events] == [("open", HEAD), ("update", "")]
    assert all(e.at is not None for e in events)
    desc = await dev_env.client.get_workflow_handle("preview/cart/3").describe()
    assert desc.task_queue == queue
    assert await desc.static_summary() == "preview cart !3 to preview by gitlab"
    assert desc.typed_search_attributes  # start_attributes: searchable at once
    await dev_env.client.get_workflow_handle("preview/cart/3").terminate("test done")
    async with asgi(create_app(platform, secrets(), dev_env.client)) as http:  # its run has ended
        r = await post(http, hook_payload(path="demo/cart", iid=3, action="merge"))
    assert r.json() == {"result": "ignored", "reason": "no preview runs for preview/cart/3"}


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, in a thread of its own."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, what="the receiver to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def deliveries(box: Sandbox, url: str) -> list[dict[str, Any]]:
    audit = httpx.get(f"{box.urls['gitlab']}/_sandbox/audit").json()
    return [e for e in audit if e.get("action") == "deliver_hook" and e.get("url") == url]


async def test_gitlab_deliveries_open_update_close_and_reopen(
        box: Sandbox, dev_env: Any, queue: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kepler.previews")
    platform = make_platform(box, address(dev_env), queue, "staging")
    gl = gitlab.Gitlab(box.urls["gitlab"], private_token=box.settings.gitlab_token,
                       retry_transient_errors=False)
    client = dev_env.client
    # The receiver connects to Temporal itself (on uvicorn's loop), as `serve` does.
    with serving(create_app(platform, secrets())) as base:
        url = f"{base}{PATH}"
        project = create_from_template(gl, "basket")
        project.branches.create({"branch": "early", "ref": "main"})
        early = project.mergerequests.create({"source_branch": "early", "target_branch": "main",
                                              "title": "Before the hook"})
        project.hooks.create({"url": url, "push_events": True, "merge_requests_events": True,
                              "token": TOKEN})
        project.branches.create({"branch": "feature", "ref": "main"})
        first = commit_to(project, "feature", "one.txt", "1")  # a Push Hook: ignored
        mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                           "title": "Preview me"})
        wid = f"preview/basket/{mr.iid}"
        (opened,) = await events_of(client, wid, 1)
        assert (opened.action, opened.sha) == ("open", first.id)
        run_id = (await client.get_workflow_handle(wid).describe()).run_id

        second = commit_to(project, "feature", "two.txt", "2")  # an update of the open MR
        updated = (await events_of(client, wid, 2))[1]
        assert (updated.action, updated.sha) == ("update", second.id)
        assert (await client.get_workflow_handle(wid).describe()).run_id == run_id

        mr.state_event = "close"
        mr.save()
        closed = (await events_of(client, wid, 3))[2]
        assert (closed.action, closed.sha) == ("close", second.id)
        handle = client.get_workflow_handle(wid, run_id=run_id, result_type=PreviewReport)
        assert (await asyncio.wait_for(handle.result(), 30)).outcome == "ended"

        mr.state_event = "reopen"  # its preview ended: a new run starts
        mr.save()

        async def new_run() -> bool:
            return (await client.get_workflow_handle(wid).describe()).run_id != run_id
        await wait_for(new_run, timeout=30, what="a new run of the reopened preview")
        (reopened,) = await events_of(client, wid, 1)
        assert reopened.action == "reopen"
        await client.get_workflow_handle(wid).terminate("test done")

        early.state_event = "close"  # opened before the hook: no preview ever ran
        early.save()

        def logged(words: str) -> str | None:
            return next((r.getMessage() for r in caplog.records if words in r.getMessage()), None)
        line = await asyncio.to_thread(wait_until, lambda: logged(f"basket!{early.iid} close"),
                                       15, 0.05, "the early MR's close to be logged")
        assert line.endswith(f"200 ignored: no preview runs for preview/basket/{early.iid}")
        assert not await exists(client, f"preview/basket/{early.iid}")
        assert logged("not a merge request hook: Push Hook")

    got = deliveries(box, url)
    assert len(got) >= 6 and all(d.get("status") == 200 for d in got), got
    assert not any(TOKEN in r.getMessage() for r in caplog.records)
