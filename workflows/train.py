"""ReleaseTrain: release several services to one environment as one operation.

The runbook: read each member's policy, check nothing else runs on it, resolve its ref
and find or build its image (so the approver sees every commit and digest, and an
unknown member fails before anything is deployed); ONE approval gate for the whole
train, when the environment's policy asks, and each member releases exactly the commit
and digest approved;
then, wave by wave in dependency order, record each member's current release,
register its undo, and release it as a child ReleaseVersion under the member's own
`<service>@<env>` id (the lock: a concurrent manual release is refused, and so is the
train's member). Members of one wave run in parallel. If any member fails, the rest of
its wave finishes, later waves never start, and every member already released is put
back, image and config (a cronjob member: its CronJob), in reverse order. The report
lists each member's outcome.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import RELEASE_TRAIN
    from kepler.contracts import TRAIN_REPORT
    from activities.gitlab import GitLabActivities
    from activities.kubernetes.workloads import DeploymentActivities
    from activities.temporal import TemporalActivities
    from kepler import naming
    from kepler.decommission import RunningQuery
    from kepler.models import Operation, ReleaseReport, ReleaseRequest, StepRecord
    from kepler.payloads import EnvironmentPolicy, ReleaseSnapshot, ReleaseTarget, ResolveRef
    from kepler.train import MemberResult, TrainMember, TrainReport, TrainRequest, waves
    from workflows.common.children import child_operation
    import workflows.steps.cronjob as cronjob
    import workflows.steps.freeze as freeze
    import workflows.steps.kube as kube
    import workflows.steps.promotion as promotion
    from workflows.steps.image import ensure_image
    from workflows.steps.platform import read_policy
    from workflows.common.approval import ApprovalGate
    from workflows.base import (
        EVERY_PROMISE, Done, KeplerWorkflow, NotPutBack, StepFailed,
    )

# Retired patch (deprecated in 0.2.0): trains build before the gate and have the digests
# approved.
APPROVED_DIGESTS = "kepler-approved-digests"


class MembersFailed(StepFailed):
    """Members of a wave failed (each undid its own change); the train undoes the rest."""

    def __init__(self, message: str) -> None:
        super().__init__("release members", message, "MembersFailed")

    def describe(self) -> str:
        return self.cause


@workflow.defn(name=RELEASE_TRAIN.workflow)
class ReleaseTrain(ApprovalGate, KeplerWorkflow[TrainReport]):
    def __init__(self) -> None:
        super().__init__()
        self.train: TrainReport | None = None

    @workflow.query(name=TRAIN_REPORT.name)
    def report(self) -> TrainReport:
        assert self.train is not None
        return self.train

    @workflow.run
    async def run(self, req: TrainRequest) -> TrainReport:
        plan = waves(req.members)
        self.train = self.report = TrainReport(name=req.name, env=req.env, members=[
            MemberResult(service=s, ref=self._member(req, s).ref, wave=i + 1)
            for i, wave in enumerate(plan) for s in wave])
        return await self.operate(Operation.TRAIN, req.service, req.env, req.requested_by,
                                  " ".join(f"{m.service}:{m.ref}" for m in req.members)[:200],
                                  lambda: self.runbook(req, plan), req)

    async def runbook(self, req: TrainRequest, plan: list[list[str]]) -> Done:
        report = self.train
        policies = await self.preflight(req)
        policy = policies[req.members[0].service]
        checked = await freeze.check(self, policy, req)  # refused or waited out (no break-glass)
        approved = False
        if policy.approval.required:
            what = (f"release train {req.name} to {req.env}: " + ", ".join(
                f"{m.service} {m.ref} ({report.member(m.service).commit[:12]})" for m in req.members))
            members = [report.member(m.service) for m in req.members]
            approvals = await self.approval_gate(
                policy.approval, what, commits=[m.commit for m in members],
                digests=[m.image for m in members])
            report.approved_by = [a.approver for a in approvals]
            approved = True
        await freeze.recheck(self, policy, req, checked)
        for i, wave in enumerate(plan):
            self.set_stage(f"wave {i + 1} of {len(plan)}: " + ", ".join(wave))
            ok = await asyncio.gather(*(self.release(req, self._member(req, s), policies[s], approved)
                                        for s in wave))
            if not all(ok):
                failed = [s for s, good in zip(wave, ok) if not good]
                raise MembersFailed(f"{', '.join(failed)} failed: " + "; ".join(
                    report.member(s).error for s in failed))
        return Done("succeeded", f"train {req.name}: {len(req.members)} services released to "
                    f"{req.env}")

    def before_undo(self, outcome: str) -> None:
        for member in self.train.members:
            if member.outcome == "pending":
                member.outcome = "not_started"

    def end_message(self, outcome: str, message: str) -> str:
        return (f"train {self.train.name}: {message}; rolled back: "
                f"{', '.join(self.train.rolled_back) or 'nothing'}")

    @staticmethod
    def _member(req: TrainRequest, service: str) -> TrainMember:
        return next(m for m in req.members if m.service == service)

    async def preflight(self, req: TrainRequest) -> dict[str, EnvironmentPolicy]:
        """Nothing deployed: policies, nothing else running on a member, refs resolve, and
        each member's image (built if missing: a build changes no environment)."""
        async def one(m: TrainMember) -> EnvironmentPolicy:
            policy = await read_policy(self, m.service, req.env, f"{m.service}: read policy")
            busy = await self.step(f"{m.service}: check nothing runs",
                                   TemporalActivities.running_operations,
                                   RunningQuery(service=m.service, envs=[req.env]))
            if busy:
                raise StepFailed(f"{m.service}: check nothing runs", "; ".join(busy), "Conflict")
            commit = await self.step(f"{m.service}: resolve {m.ref}", GitLabActivities.resolve_ref,
                                     ResolveRef(service=m.service, ref=m.ref))
            member = self.train.member(m.service)
            member.commit = commit.sha
            patches.retired(APPROVED_DIGESTS)
            on_path = await promotion.enforce_path(self, m.service, req.env, policy,
                                                   commit.sha, label=f"{m.service}: ")
            member.image = on_path.image or await ensure_image(
                self, policy, m.service, commit.sha, label=f"{m.service}: ")
            return policy

        policies = await asyncio.gather(*(one(m) for m in req.members))
        return {m.service: p for m, p in zip(req.members, policies)}

    async def release(self, req: TrainRequest, m: TrainMember, policy: EnvironmentPolicy,
                      approved: bool) -> bool:
        """Release one member as a child; False (with the member's error) when it failed.
        A child that fails undoes its own change, so only successes stay in the saga."""
        result = self.train.member(m.service)
        target = ReleaseTarget(env=req.env, namespace=policy.namespace, service=m.service)
        before: ReleaseSnapshot = await self.step(
            f"{m.service}: record current release", DeploymentActivities.snapshot, target)
        is_cronjob = False
        if not before.exists:  # a cronjob member
            patches.retired(EVERY_PROMISE)
            cron = await cronjob.snapshot(self, target, f"{m.service}: record current CronJob")
            before, is_cronjob = (cron, True) if cron.exists else (before, False)
        result.previous_image = before.image
        child_id = naming.workflow_id(m.service, req.env)
        release_id: list[str] = []
        undo = self.saga.add(
            f"{m.service}: restore {before.image or 'the empty deployment'} and its config",
            lambda: self._restore(m.service, before, release_id, policy, is_cronjob))
        record = StepRecord(name=f"release {m.service} {m.ref}", started_at=workflow.now())
        self.state.steps.append(record)
        result.outcome = "running"
        try:
            ending = await child_operation(
                ReleaseRequest(
                    service=m.service, env=req.env, ref=m.ref, requested_by=req.requested_by,
                    reason=f"train {req.name}" + (f": {req.reason}" if req.reason else ""),
                    train_approved=approved, commit=result.commit,
                    image=result.image,
                    train_approvals=self.gate_approvals if approved else [],
                    train_request=getattr(self.request, "signed", None)),
                child_id, f"release {m.service} {m.ref} to {req.env} (train {req.name})",
                started=lambda run_id: release_id.append(f"{child_id}/{run_id}"))
        except asyncio.CancelledError:
            self.saga.discard(undo)  # a cancelled child compensates itself
            record.outcome, record.finished_at, result.outcome = "failed", workflow.now(), "cancelled"
            raise
        if ending.report is None:
            self.saga.discard(undo)  # the child put back what it changed, or says what not
            self.compensation.not_put_back += [f"{m.service}: {w}" for w in ending.not_put_back]
            return self._failed(record, result, "failed" if ending.outcome == "busy"
                                else ending.outcome, ending.message)
        child: ReleaseReport = ending.report
        record.outcome, record.finished_at = "done", workflow.now()
        result.outcome, result.image, result.commit = "succeeded", child.image, child.commit
        return True

    @staticmethod
    def _failed(record: StepRecord, result: MemberResult, outcome: str, message: str) -> bool:
        record.outcome, record.detail, record.finished_at = "failed", message, workflow.now()
        result.outcome, result.error = outcome, message
        return False

    async def _restore(self, service: str, before: ReleaseSnapshot, release_id: list[str],
                       policy: EnvironmentPolicy, is_cronjob: bool) -> None:
        """Put a released member back, unless someone released it again since."""
        result = self.train.member(service)
        now = await (cronjob.snapshot(self, before.target, f"{service}: read current CronJob")
                     if is_cronjob else
                     self.step(f"{service}: read current release", DeploymentActivities.snapshot,
                               before.target))
        running = now.annotations.get(naming.RELEASE_ID, "")
        if release_id and running != release_id[0]:
            result.rollback = (f"left alone: changed since the train released it (now {running} "
                               f"by {now.annotations.get(naming.REQUESTED_BY, 'someone')})")
            self.state.notes.append(f"{service}: {result.rollback}")
            raise NotPutBack(result.rollback)
        self.set_stage(f"rolling back {service}")
        if is_cronjob:  # no rollout to wait for: the next scheduled run runs what was there
            await cronjob.restore(self, before, f"{service}: restore previous CronJob")
        else:
            await kube.restore_and_wait(self, before, policy.rollout_timeout)
        result.outcome = "rolled_back"
        result.rollback = f"restored {before.image or 'the empty deployment'} and its config"
        self.train.rolled_back.append(service)
