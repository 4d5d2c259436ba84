"""The in-memory world of tests/fakes/world.py plus GitLab merge requests and their notes,
preview namespaces and the previews running, for time-skipping Preview tests."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from kepler.contracts import MERGE_REQUEST
from kepler.payloads import BuildRequest, BuildResult
from kepler.previews import (
    MergeRequestEvent, MergeRequestQuery, MergeRequestState, PreviewDeploy, PreviewNote,
    PreviewRoom, PreviewSettings, PreviewTarget,
)
from tests.fakes.world import FakeWorld, by_name


@dataclass
class PreviewWorld(FakeWorld):
    settings: PreviewSettings = field(default_factory=lambda: PreviewSettings(
        env="staging", ttl="1h", max_per_service=2))
    mrs: dict[int, MergeRequestState] = field(default_factory=dict)
    mr_notes: dict[int, list[str]] = field(default_factory=dict)  # iid -> Kepler's note, each version
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {owner, image}
    build_gate: asyncio.Event | None = None  # set: builds wait for it
    client: Client | None = None
    running: dict[str, Any] = field(default_factory=dict)  # workflow id -> last push (or None)

    def activities(self) -> list[Any]:
        world = self
        base = by_name(super().activities())
        fake_build = base["jenkins.build"]

        @activity.defn(name="platform.preview_settings")
        async def preview_settings() -> PreviewSettings:
            return world.settings

        @activity.defn(name="gitlab.merge_request")
        async def merge_request(q: MergeRequestQuery) -> MergeRequestState:
            world.calls.append(f"read mr {q.mr}")
            if q.mr not in world.mrs:
                raise ApplicationError(f"merge request !{q.mr} not found", type="NotFound",
                                       non_retryable=True)
            return world.mrs[q.mr]

        @activity.defn(name="gitlab.preview_note")
        async def preview_note(n: PreviewNote) -> int:
            world.mr_notes.setdefault(n.mr, []).append(n.body)
            return n.mr

        @activity.defn(name="jenkins.build")
        async def build(b: BuildRequest) -> BuildResult:
            if world.build_gate is not None:
                world.calls.append("build waiting")
                await world.build_gate.wait()
            return await fake_build(b)

        @activity.defn(name="kubernetes.deploy_preview")
        async def deploy_preview(d: PreviewDeploy) -> int:
            me = activity.info().workflow_id
            ns = world.namespaces.get(d.target.namespace)
            if ns is not None and ns["owner"] != me:
                raise ApplicationError(f"namespace {d.target.namespace} exists and is not this "
                                       "preview's: nothing was changed in it", type="Conflict",
                                       non_retryable=True)
            deployment = next(m for m in d.manifests if m["kind"] == "Deployment")
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            world.namespaces[d.target.namespace] = {"owner": me, "image": image,
                                                    "kinds": [m["kind"] for m in d.manifests]}
            world.running[me] = activity.info().current_attempt_scheduled_time
            return 1

        @activity.defn(name="kubernetes.teardown_preview")
        async def teardown_preview(t: PreviewTarget) -> str:
            ns = world.namespaces.get(t.namespace)
            if ns is None:
                return "already gone"
            if ns["owner"] != activity.info().workflow_id:
                return "not this preview's: left as it is"
            del world.namespaces[t.namespace]
            world.running.pop(activity.info().workflow_id, None)
            return "deleted"

        def by_idleness() -> list[str]:  # a preview before its first push: its start, the newest
            return [wid for _, wid in sorted(((t or datetime.max.replace(tzinfo=timezone.utc)), wid)
                                             for wid, t in world.running.items())]

        @activity.defn(name="temporal.preview_over_cap")
        async def preview_over_cap(room: PreviewRoom) -> bool:
            ranked = by_idleness()
            return activity.info().workflow_id in ranked[:max(0, len(ranked) - room.cap)]

        @activity.defn(name="temporal.make_room_for_preview")
        async def make_room(room: PreviewRoom) -> list[str]:
            me = activity.info().workflow_id
            others = [wid for wid in by_idleness() if wid != me]
            evicted = others[:max(0, len(others) - room.cap + 1)]
            for wid in evicted:
                await world.client.get_workflow_handle(wid).signal(
                    MERGE_REQUEST.name, MergeRequestEvent(action="evicted"))
            world.running.setdefault(me, None)
            return evicted

        base.update({"jenkins.build": build})
        return [*base.values(), preview_settings, merge_request, preview_note, deploy_preview,
                teardown_preview, make_room, preview_over_cap]
