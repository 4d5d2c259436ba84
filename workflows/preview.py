"""Preview: a merge request's own environment, for as long as the merge request lives.

The runbook (id `preview/<service>/<iid>`; GitLab's merge request webhook starts it and
wakes it up, `kepler preview stop` cancels it): make room (at most `max_per_service` at
once; the oldest idle one goes, said on its MR); then, every time it is woken or at the
start, read the merge request from GitLab — the event only says "look again", so a
forged one can make it look, never make it deploy something else: while it is open and
its head commit is not the one deployed, reuse or build that commit's image, deploy it as
`<service>` in the namespace `<service>-<env>-mr-<iid>` (created for this preview, with
the spec's config and the preview environment's overrides) and wait for the rollout, then
post or update Kepler's note on the merge request with the URL. A merge, a close, `ttl`
without a push, a cancel or an eviction tears the namespace down — this preview's only;
nothing of the environment's own is ever touched, and no release is recorded.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.gitlab import GitLabActivities
    from activities.kubernetes.previews import PreviewActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.platform import PlatformActivities
    from activities.temporal import TemporalActivities
    from kepler import manifests
    from kepler.contracts import MERGE_REQUEST, PREVIEW
    from kepler.models import Operation, Outcome
    from kepler.payloads import EnvironmentPolicy, ReadSpec, ReleaseTarget, WaitRollout
    from kepler.previews import (
        MergeRequestEvent, MergeRequestQuery, MergeRequestState, PreviewDeploy, PreviewNote,
        PreviewReport, PreviewRequest, PreviewRoom, PreviewSettings, PreviewState, PreviewTarget,
        preview_name, preview_namespace,
    )
    from kepler.spec import ServiceSpec
    from workflows.base import UNDO, Done, KeplerWorkflow, StepFailed
    from workflows.common.interrupt import Stopped, unless
    from workflows.steps.image import ensure_image
    from workflows.steps.platform import read_policy

ENDING = ("merge", "close", "evicted")  # hints that stop a build in flight (then it looks again)


@workflow.defn(name=PREVIEW.workflow)
class Preview(KeplerWorkflow[PreviewReport]):
    def __init__(self) -> None:
        super().__init__()
        self._events: list[MergeRequestEvent] = []
        self._evicted = False  # another preview of the service made room (at most the cap)
        self._pushes_this_run = 0
        self.settings: PreviewSettings | None = None
        self.target: PreviewTarget | None = None
        self._why = "it failed"  # said on the merge request when the saga removes it

    @workflow.signal(name=MERGE_REQUEST.name)
    def merge_request(self, event: MergeRequestEvent) -> None:
        if len(self._events) < 100:  # a flood of hints is one hint
            self._events.append(event)
        self._evicted = self._evicted or event.action == "evicted"

    @workflow.run
    async def run(self, req: PreviewRequest) -> PreviewReport:
        self.report = PreviewReport(service=req.service, mr=req.mr, outcome="running")
        return await self.operate(Operation.PREVIEW, req.service, "preview", req.requested_by,
                                  f"!{req.mr}", lambda: self.runbook(req), req)

    async def runbook(self, req: PreviewRequest) -> Done:
        settings = self.settings = await self.step("read preview settings",
                                                   PlatformActivities.preview_settings, None)
        policy: EnvironmentPolicy = await read_policy(self, req.service, settings.env)
        if policy.approval.required:  # kepler.yaml refuses this too; the worker's may be older
            raise StepFailed("read policy", f"previews.env: {settings.env} requires approval",
                             "InvalidInput", bad_input=True)
        ns = (policy.namespace if settings.mode == "header" else
              preview_namespace(req.service, settings.env, req.mr))
        self.target = PreviewTarget(env=settings.env, namespace=ns, service=req.service, mr=req.mr)
        self.state.preview = PreviewState(mr=req.mr, env=settings.env, namespace=ns)
        if workflow.info().continued_run_id is None:
            await self.step("make room", TemporalActivities.make_room_for_preview,
                            PreviewRoom(service=req.service, cap=settings.max_per_service))
        self.saga.add(f"delete namespace {ns}", lambda: self._remove(self._why))  # before anything exists
        while not (self._evicted and await self._over_cap(req)):
            self._events.clear()
            try:
                mr = await self._read(req)
            except MergeRequestGone:
                return await self._wind_up("the merge request is gone")
            p = self.state.preview
            if mr is None:  # GitLab did not answer: the preview stays; look again on news
                if not await self._news(settings):
                    return await self._wind_up(f"no push for {settings.ttl}", "expired")
                continue
            p.title, p.source_branch, p.sha = mr.title, mr.source_branch, mr.sha
            if mr.state in ("closed", "merged"):  # (locked: a merge in progress; not yet)
                return await self._wind_up(f"the merge request was {mr.state}")
            if not mr.same_project:
                return await self._wind_up("a merge request from a fork gets no preview")
            if mr.sha != p.deployed_sha:
                await self._deploy_unless_ended(req, policy, mr)
                continue  # look again: a push may have come meanwhile
            if self._pushes_this_run >= settings.pushes_per_run and not self._evicted:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(req)  # carries nothing: GitLab and the cluster say it all
            if not await self._news(settings):
                return await self._wind_up(f"no push for {settings.ttl}", "expired")
        return await self._wind_up(f"made room for a newer preview (at most "
                                   f"{settings.max_per_service} of {req.service} at once)")

    async def _read(self, req: PreviewRequest) -> MergeRequestState | None:
        """The merge request as GitLab says it now; None when GitLab did not answer (a
        merge request that is gone ends the preview: NotFound)."""
        try:
            return await self.step("read merge request", GitLabActivities.merge_request,
                                   MergeRequestQuery(service=req.service, mr=req.mr))
        except StepFailed as e:
            if e.error_type == "NotFound":
                raise MergeRequestGone() from e
            self.state.preview.last_error = f"read merge request: {e.cause}"
            return None

    async def _over_cap(self, req: PreviewRequest) -> bool:
        """An eviction hint (a signal anyone may send), checked with Temporal: only a preview
        really over the cap goes."""
        over = await self.step("check the eviction", TemporalActivities.preview_over_cap,
                               PreviewRoom(service=req.service, cap=self.settings.max_per_service))
        if not over:
            self._evicted = False
            self.state.notes.append("an eviction hint that the count of previews does not bear "
                                    "out: ignored")
        return over

    async def _deploy_unless_ended(self, req: PreviewRequest, policy: EnvironmentPolicy,
                                   mr: MergeRequestState) -> None:
        """Deploy the head commit; a merge or close hint meanwhile stops it (then it looks)."""
        try:
            await unless(self._deploy(req, policy, mr),
                         lambda: any(e.action in ENDING for e in self._events))
        except Stopped:
            self.state.notes.append(f"deploy of {mr.sha[:12]} stopped: the merge request changed")
        except StepFailed as e:  # this push does not deploy; the last one keeps running
            self.state.preview.last_error = f"{e.step}: {e.cause}"
            self.state.preview.deployed_sha = mr.sha  # not retried until the next push
            self.state.preview.last_push_at = workflow.now()  # a push all the same (ttl)
            await self._note(req, f"Preview of {mr.sha[:12]} failed at {e.step}: {e.cause}")

    async def _deploy(self, req: PreviewRequest, policy: EnvironmentPolicy,
                      mr: MergeRequestState) -> None:
        p, settings, target = self.state.preview, self.settings, self.target
        p.waiting_on = f"deploy of {mr.sha[:12]}"
        image = await ensure_image(self, policy, req.service, mr.sha)
        spec: ServiceSpec = await self.step("read service spec", GitLabActivities.read_spec,
                                            ReadSpec(service=req.service, sha=mr.sha))
        if settings.mode == "header" and not spec.mesh:
            raise StepFailed("read service spec", "a header preview is reached through the "
                             "mesh, and the spec says mesh: false", "InvalidInput")
        generation = await self.step("deploy preview", PreviewActivities.deploy_preview,
                                     PreviewDeploy(target=target, manifests=preview_objects(
                                         spec, settings, target, image)))
        await self.step("wait for rollout", DeploymentActivities.wait_rollout, WaitRollout(
            target=ReleaseTarget(env=target.env, namespace=target.namespace, service=req.service,
                                 deployment=preview_name(req.service, req.mr)
                                 if settings.mode == "header" else ""),
            generation=generation, timeout=policy.rollout_timeout))
        p.deployed_sha, p.image, p.last_error = mr.sha, image, ""
        p.pushes += 1
        self._pushes_this_run += 1
        p.last_push_at = workflow.now()
        p.url = settings.url_of(req.service, target.namespace, req.mr, spec.port)
        self.report.deployed_sha, self.report.pushes = mr.sha, p.pushes
        await self._note(req, f"Preview of {mr.sha[:12]} is up: {p.url}")

    async def _news(self, settings: PreviewSettings) -> bool:
        """Wait for an event, at most until the ttl since the last push: False when none came."""
        p = self.state.preview
        p.expires_at = (p.last_push_at or workflow.now()) + settings.ttl
        p.waiting_on = f"pushes, a merge or a close; torn down at {p.expires_at:%Y-%m-%d %H:%M} UTC"
        self.set_stage("live")
        left = max(p.expires_at - workflow.now(), timedelta(seconds=1))
        try:
            await workflow.wait_condition(lambda: bool(self._events), timeout=left)
        except asyncio.TimeoutError:
            return False
        return True

    def before_undo(self, outcome: str) -> None:
        self._why = "stopped (kepler preview stop)" if outcome == "cancelled" else f"it {outcome}"

    async def _wind_up(self, why: str, outcome: Outcome = "succeeded") -> Done:
        await self._remove(why)
        self.saga.clear()
        self.report.reason = why
        return Done("preview_removed", f"preview of !{self.target.mr} removed: {why}", outcome)

    async def _remove(self, why: str) -> None:
        await self.step("delete preview namespace", PreviewActivities.teardown_preview,
                        self.target, UNDO)
        await self._note(self._req(), f"Preview removed: {why}.")

    async def _note(self, req: PreviewRequest, text: str) -> None:
        """Kepler's one note on the merge request; a note that cannot be written is a
        note in the status, never a reason to tear the preview down."""
        try:
            await self.step("note on merge request", GitLabActivities.preview_note,
                            PreviewNote(service=req.service, mr=req.mr, body=text))
        except StepFailed as e:
            self.state.notes.append(f"note on !{req.mr} not written: {e.cause}")

    def _req(self) -> PreviewRequest:
        return PreviewRequest(service=self.state.service, mr=self.target.mr)


class MergeRequestGone(Exception):
    """GitLab says there is no such merge request (any more)."""


def preview_objects(spec: ServiceSpec, settings: PreviewSettings, target: PreviewTarget,
                    image: str) -> list[dict]:
    """The preview's objects: the service's account, config, Deployment (the image, the
    preview's replicas, the environment's overrides) and Service; no routes, no autoscaling,
    no volumes (a preview shares nothing with the environment). In header mode, each named
    (and its pods labelled) `<service>-mr-<iid>`, so that no Service of the environment
    ever selects them."""
    shape = spec.model_copy(update={"exposure": "internal", "host": None, "autoscaling": None,
                                    "min_available": None, "volumes": []})
    if settings.mode == "header":
        shape = shape.model_copy(update={"name": preview_name(spec.name, target.mr)})
    objects = [o for o in manifests.for_environment(shape, target.env, target.namespace)
               if o["kind"] in ("ServiceAccount", "ConfigMap", "Service")]
    deployment = manifests.deployment(shape, target.env, target.namespace, version="preview",
                                      image=image, replicas=settings.replicas)
    return objects[:2] + [deployment] + objects[2:]
