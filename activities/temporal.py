"""The platform's own view of operations: the decommission plan from kepler.yaml, which
operations on a service are running right now, and its release schedules (Temporal)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, ScheduleDescription, ScheduleHandle, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import non_retryable, retryable
from activities.platform import environment_policy_of, signers_of
from kepler import naming
from kepler.contracts import MERGE_REQUEST, PREVIEW, RELEASE_VERSION, STATUS
from kepler.models import OperationStatus
from kepler.previews import MergeRequestEvent, PreviewRoom
from kepler import search_attributes as sa
from kepler.decommission import (
    DecommissionPlan, EnvTarget, RunningQuery, SchedulePause, TeardownResult,
)
from kepler.freeze import ActiveFreeze
from kepler.payloads import PolicyNow, PolicyQuery
from kepler.clients.freezes import FreezeLookupError, adhoc_freezes
from kepler.identity import RequestUse, SignedStatement
from kepler.schedules import schedule_id
from kepler.settings import Platform
from kepler.clients.temporal import LazyClient


MAX_RUNS_LOOKED_AT = 100  # runs of one workflow id within a request's lifetime (one at a time)


class TemporalActivities:
    def __init__(self, platform: Platform, client: Client | None = None) -> None:
        self.platform = platform
        self._temporal = LazyClient(platform.temporal, client)

    async def client(self) -> Client:
        return await self._temporal.get()

    @activity.defn(name="platform.decommission_plan")
    async def decommission_plan(self, service: str) -> DecommissionPlan:
        return DecommissionPlan(
            approval=self.platform.decommission_approval(), policy=self.platform.decommission,
            builder=self.platform.builder, signers=signers_of(self.platform),
            targets=[EnvTarget(env=env, namespace=cfg.namespace_for(service, env), service=service)
                     for env, cfg in sorted(self.platform.environments.items())])

    @activity.defn(name="temporal.running_operations")
    async def running_operations(self, query: RunningQuery) -> list[str]:
        """Every mutating operation on one service has the id `<service>@<env>` or
        `<service>@all`; describe each and name those running."""
        client = await self.client()
        ids = [naming.workflow_id(query.service, env) for env in query.envs]
        ids.append(naming.service_workflow_id(query.service))
        running = []
        for workflow_id in ids:
            if workflow_id == query.exclude:
                continue
            try:
                desc = await client.get_workflow_handle(workflow_id).describe()
            except RPCError as e:
                if e.status == RPCStatusCode.NOT_FOUND:
                    continue
                raise retryable(f"describe {workflow_id}: {e.message}") from None
            if desc.status != WorkflowExecutionStatus.RUNNING:
                continue
            attrs = desc.typed_search_attributes
            running.append(
                f"{workflow_id} is busy: {attrs.get(sa.OPERATION) or desc.workflow_type} "
                f"{attrs.get(sa.VERSION) or ''} started by {attrs.get(sa.REQUESTED_BY) or 'someone'} "
                f"at {desc.start_time:%Y-%m-%d %H:%M:%S} UTC is {attrs.get(sa.STAGE) or 'running'}"
                .replace("  ", " "))
        return running

    @activity.defn(name="temporal.request_used")
    async def request_used(self, use: RequestUse) -> str:
        """The run of the calling workflow id (Temporal's word, activity.info(), never the
        payload's) that was started, since `use.since`, with the signed request
        `use.signature`, other than the calling run; '' when none. Each candidate's start
        input is read from its own history, which no client can rewrite."""
        info = activity.info()
        if any(c in info.workflow_id for c in "'\\"):
            raise non_retryable("InvalidInput", f"{info.workflow_id!r}: not a Kepler workflow id")
        client = await self.client()
        handed_over_by = await self._handed_over_by(client, use) if use.handed_over else ""
        query = (f"WorkflowId = '{info.workflow_id}' AND "
                 f"StartTime >= '{use.since.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}'")
        try:
            runs = [run async for run in client.list_workflows(query, limit=MAX_RUNS_LOOKED_AT + 1)]
            if len(runs) > MAX_RUNS_LOOKED_AT:
                raise non_retryable("Unauthorized", f"{info.workflow_id}: over {MAX_RUNS_LOOKED_AT} "
                                    "runs since the request was signed; cannot tell it is unused")
            for run in runs:
                if run.run_id not in (info.workflow_run_id, handed_over_by) and \
                        await self._signature_of(client, run.id, run.run_id) == use.signature:
                    return run.run_id
        except RPCError as e:
            raise retryable(f"list runs of {info.workflow_id}: {e.message}") from None
        return ""

    async def _handed_over_by(self, client: Client, use: RequestUse) -> str:
        """The release run that handed over to the calling run (a blue-green release): the
        run it continues, as its own history says, which must be a ReleaseVersion on this
        worker's task queue started with the same signed request; Unauthorized otherwise
        (a run on someone else's task queue proves nothing)."""
        info = activity.info()
        try:
            started = await self._start_event(client, info.workflow_id, info.workflow_run_id)
            previous = started.continued_execution_run_id if started else ""
            before = await self._start_event(client, info.workflow_id, previous) if previous else None
            ours = (before is not None and before.workflow_type.name == RELEASE_VERSION.workflow
                    and before.task_queue.name == info.task_queue
                    and await self._signature_of(client, info.workflow_id, previous) == use.signature)
        except RPCError as e:
            raise retryable(f"read the run {info.workflow_id} continues: {e.message}") from None
        if not ours:
            raise non_retryable("Unauthorized", "a blue-green run is handed over by its release "
                                "(Kepler's own continue-as-new), and this one was not")
        return previous

    async def _start_event(self, client: Client, workflow_id: str, run_id: str) -> Any:
        async for event in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events(
                page_size=1):
            return event.workflow_execution_started_event_attributes
        return None

    async def _signature_of(self, client: Client, workflow_id: str, run_id: str) -> str:
        """The proof (SignedStatement.proof) of the request run `run_id` was started with
        ('' if unsigned)."""
        async for event in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events(
                page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            if not payloads:
                return ""
            [request] = await client.data_converter.decode(payloads[:1])
            if isinstance(request, dict) and isinstance(request.get("release"), dict):
                request = request["release"]  # a blue-green run: its release's request
            signed = request.get("signed") if isinstance(request, dict) else None
            if not isinstance(signed, dict):
                return ""
            try:
                return SignedStatement.model_validate(signed).proof()
            except ValidationError:
                return ""
        return ""

    @activity.defn(name="platform.policy_and_freezes")
    async def policy_and_freezes(self, query: PolicyQuery) -> PolicyNow:
        """platform.environment_policy and temporal.active_freeze in one read (one activity
        where a release's first check made two)."""
        policy, freezes = await asyncio.gather(
            asyncio.to_thread(environment_policy_of, self.platform, query),  # reads files
            self.active_freeze(query.env))
        return PolicyNow(policy=policy, adhoc_freezes=freezes)

    @activity.defn(name="temporal.active_freeze")
    async def active_freeze(self, env: str) -> list[ActiveFreeze]:
        """The ad-hoc freeze running on `env` (freeze@<env>), as that Freeze workflow says;
        [] when none. When Temporal cannot tell, retry: never assume the environment open."""
        try:
            return await adhoc_freezes(await self.client(), env)
        except FreezeLookupError as e:
            raise retryable(str(e)) from None

    async def _schedules(self, req: SchedulePause) -> list[tuple[ScheduleHandle, ScheduleDescription]]:
        """The service's release schedules that exist, with what they look like now."""
        client = await self.client()
        found = []
        for env in req.envs:
            handle = client.get_schedule_handle(schedule_id(req.service, env))
            try:
                found.append((handle, await handle.describe()))
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise retryable(f"describe schedule {handle.id}: {e.message}") from None
        return found

    @activity.defn(name="temporal.pause_schedules")
    async def pause_schedules(self, req: SchedulePause) -> list[str]:
        """Pause the service's running release schedules; return the ids paused under
        `req.note` (ones paused before by someone else stay theirs, and stay paused)."""
        paused = []
        for handle, desc in await self._schedules(req):
            state = desc.schedule.state
            if state.paused and state.note != req.note:
                continue
            if not state.paused:
                await handle.pause(note=req.note)
            paused.append(handle.id)
        return paused

    @activity.defn(name="temporal.unpause_schedules")
    async def unpause_schedules(self, req: SchedulePause) -> list[str]:
        """Unpause the schedules still paused under `req.note`, and only those: a schedule
        someone paused (or changed) since is left as they made it."""
        resumed = []
        for handle, desc in await self._schedules(req):
            if desc.schedule.state.paused and desc.schedule.state.note == req.note:
                await handle.unpause(note=f"unpaused: {req.note}"[:300])
                resumed.append(handle.id)
        return resumed

    @activity.defn(name="temporal.delete_schedules")
    async def delete_schedules(self, req: SchedulePause) -> TeardownResult:
        deleted = []
        for handle, _ in await self._schedules(req):
            try:
                await handle.delete()
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise retryable(f"delete schedule {handle.id}: {e.message}") from None
            deleted.append(f"release schedule {handle.id}")
        return TeardownResult(deleted=deleted)

    @activity.defn(name="temporal.make_room_for_preview")
    async def make_room_for_preview(self, room: PreviewRoom) -> list[str]:
        """At most `previews.max_per_service` (this worker's kepler.yaml) previews of the
        service at once, the calling one included: tell the oldest idle ones (longest since
        their last push, or their start) to go; their ids. Each checks it before it goes."""
        info = activity.info()
        try:
            others = [wid for _, wid in await self._previews_by_idleness(room.service)
                      if wid != info.workflow_id]
            evicted = others[:max(0, len(others) - self.platform.previews.max_per_service + 1)]
            client = await self.client()
            for workflow_id in evicted:
                await client.get_workflow_handle(workflow_id).signal(
                    MERGE_REQUEST.name, MergeRequestEvent(action="evicted"))
        except RPCError as e:
            raise retryable(f"make room for a preview of {room.service}: {e.message}") from None
        return evicted

    @activity.defn(name="temporal.preview_over_cap")
    async def preview_over_cap(self, room: PreviewRoom) -> bool:
        """Whether the calling preview is one of those that must go: more previews of the
        service run than `previews.max_per_service`, and it is among the oldest idle of the
        surplus. What an eviction hint (a signal anyone may send) is checked against."""
        info = activity.info()
        try:
            ranked = [wid for _, wid in await self._previews_by_idleness(room.service)]
        except RPCError as e:
            raise retryable(f"count the previews of {room.service}: {e.message}") from None
        surplus = len(ranked) - self.platform.previews.max_per_service
        return info.workflow_id in ranked[:max(0, surplus)]

    async def _previews_by_idleness(self, service: str) -> list[tuple[datetime, str]]:
        """The running previews of `service`, longest idle first (since their last push or,
        before one, their start); those already winding up are not counted."""
        client = await self.client()
        query = (f"WorkflowType = '{PREVIEW.workflow}' AND ExecutionStatus = 'Running' AND "
                 f"{sa.SERVICE.name} = '{service}'")
        ranked = []
        async for run in client.list_workflows(query, limit=200):
            status = await client.get_workflow_handle(run.id).query(
                STATUS.name, result_type=OperationStatus)
            if status.stage in ("compensating", "delete preview namespace", "done"):
                continue
            last = status.preview.last_push_at if status.preview else None
            ranked.append((last or run.start_time, run.id))
        return sorted(ranked)
