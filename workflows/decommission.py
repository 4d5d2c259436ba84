"""Decommission: retire a service everywhere, reversibly first, irreversibly after a soak.

The runbook: refuse while any operation on the service runs; get approval (always);
phase 1 (reversible), per environment: record routes and replica counts, remove the
routes, scale to 0; soak (default 24 h), during which `restore` puts phase 1 back
exactly (the service's release schedules are paused meanwhile); phase 2 (irreversible):
delete the Istio objects, the Kubernetes objects, the release schedules and the Jenkins
job, and archive (never delete) the GitLab project; notify. Phase 2
steps are retried; whatever still fails is reported with what was deleted and what
remains.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.common import patches

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import DECOMMISSION
    from kepler.contracts import DECOMMISSION_REPORT, RESTORE
    from activities.gitlab import GitLabActivities
    from activities.jenkins import JenkinsActivities
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.teardown import TeardownActivities
    from activities.temporal import TemporalActivities
    from kepler import naming
    from kepler.decommission import (
        DecommissionPlan, DecommissionReport, Footprint, RestoreRequest, RunningQuery,
        SchedulePause, TeardownRequest, TeardownResult,
    )
    from kepler.models import DecommissionRequest, Operation
    from workflows.common.approval import ApprovalGate
    from workflows.base import EVERY_PROMISE, SEALED_AUTHORITY, Done, KeplerWorkflow, StepFailed
    from workflows.common.controls import fingerprint, verify_control
    from workflows.common.trust import Untrusted


@workflow.defn(name=DECOMMISSION.workflow)
class Decommission(ApprovalGate, KeplerWorkflow[DecommissionReport]):
    def __init__(self) -> None:
        super().__init__()
        self.plan: DecommissionPlan | None = None
        self.report: DecommissionReport | None = None
        self._restore: RestoreRequest | None = None
        self._phase = "checks"
        self._problems: list[str] = []  # phase 2 steps that failed after their retries
        self._schedules: SchedulePause | None = None  # paused in phase 1
        self._controls_used: set[str] = set()

    @workflow.run
    async def run(self, req: DecommissionRequest) -> DecommissionReport:
        self.report = DecommissionReport(service=req.service, outcome="running")
        return await self.operate(Operation.DECOMMISSION, req.service, "all", req.requested_by,
                                  "", lambda: self.runbook(req), req)

    async def runbook(self, req: DecommissionRequest) -> Done:
        report: DecommissionReport = self.report
        patches.retired(SEALED_AUTHORITY)
        self.plan = plan = await self.step("read policy", TemporalActivities.decommission_plan,
                                           req.service)
        self.identify(plan.signers, gated=True)  # a decommission always needs approval
        await self.claim_request()
        if problem := plan.policy.soak_problem(req.soak):
            raise StepFailed("read policy", problem, "InvalidInput", bad_input=True)
        if not plan.approval.approvers:
            raise StepFailed("read policy", "no decommission approvers are configured "
                             "(decommission.approvers or environments.*.approval.approvers "
                             "in kepler.yaml)", "InvalidInput")
        await self.refuse_if_busy(req.service)
        await self.notify("started", f"decommission of {req.service} requested by "
                          f"{req.requested_by}" + (f": {req.reason}" if req.reason else ""))
        self._phase = "approval"
        await self.approval_gate(plan.approval, f"decommission of {req.service}")
        await self.refuse_if_busy(req.service)  # anything started while we waited?

        self._phase = "phase 1"
        patches.retired(EVERY_PROMISE)
        await self._pause_schedules(req.service)
        for target in plan.targets:
            fp: Footprint = await self.step(f"{target.env}: record routes and replicas",
                                            TeardownActivities.record_footprint, target)
            report.recorded.append(fp)
            self.saga.add(f"{target.env}: replicas and routes back",
                          lambda fp=fp: self._restore_env(fp))
            await self.step(f"{target.env}: remove routes", IstioActivities.remove_routes, fp)
            await self.step(f"{target.env}: scale to 0", TeardownActivities.scale_down, fp)

        if await self.soak(req):
            return await self._restored()
        self._phase = "phase 2"
        self.saga.clear()  # past the point of no return
        self.set_outcome("running")
        self.set_stage("deleting")  # not "soaking" any more: a restore is no longer possible
        await self.phase_two(req.service, report)
        self.state.notes.append("deleted: " + ", ".join(report.deleted))
        if report.kept:
            self.state.notes.append("kept: " + ", ".join(report.kept))
        return Done("decommissioned", f"{req.service} is decommissioned: routes, workloads "
                    "and the Jenkins job deleted; the GitLab project is archived")

    # --- the runbook's parts ------------------------------------------------------------------

    async def refuse_if_busy(self, service: str) -> None:
        assert self.plan is not None
        running: list[str] = await self.step(
            "check running operations", TemporalActivities.running_operations,
            RunningQuery(service=service, envs=[t.env for t in self.plan.targets],
                         exclude=workflow.info().workflow_id))
        if running:
            raise StepFailed("check running operations", "refused: " + "; ".join(running),
                             "Conflict")

    async def soak(self, req: DecommissionRequest) -> bool:
        """Wait out the soak; True if a restore was asked for."""
        deadline = workflow.now() + req.soak
        self.set_outcome("soaking")
        self.set_stage("soaking")
        self._phase = "soak"
        await self.notify("soaking", f"{req.service} has no routes and 0 replicas everywhere; "
                          f"`kepler restore {req.service}` puts them back until "
                          f"{deadline.isoformat()}, then everything is deleted")
        try:
            await workflow.wait_condition(lambda: self._restore is not None, timeout=req.soak)
        except asyncio.TimeoutError:
            pass
        return self._restore is not None

    async def phase_two(self, service: str, report: DecommissionReport) -> None:
        assert self.plan is not None
        problems = self._problems

        async def attempt(name: str, activity, arg, deleted: str | None = None) -> None:
            try:
                result = await self.step(name, activity, arg)
            except StepFailed as e:
                problems.append(f"{name}: {e.cause}")
                return
            if isinstance(result, TeardownResult):
                report.deleted += result.deleted
                report.kept += result.kept
            elif deleted and result is not False:
                report.deleted.append(deleted)

        for target in self.plan.targets:
            await attempt(f"{target.env}: delete Istio objects", TeardownActivities.teardown,
                          TeardownRequest(target=target, part="istio"))
            await attempt(f"{target.env}: delete Kubernetes objects", TeardownActivities.teardown,
                          TeardownRequest(target=target, part="kubernetes",
                                          delete_namespace=self.plan.policy.delete_namespaces))
        if self._schedules is not None:
            await attempt("delete release schedules", TemporalActivities.delete_schedules,
                          self._schedules)
        if self.plan.builder == "jenkins":
            await attempt("delete Jenkins job", JenkinsActivities.delete_job, service,
                          f"Jenkins job {naming.jenkins_job(service)}")
        else:
            self.skip("delete Jenkins job", "the docker builder has no Jenkins job")
        await attempt("archive GitLab project", GitLabActivities.archive_project, service,
                      f"GitLab project {service} (archived, not deleted)")
        if problems:
            report.remaining = await self._inventory(service, problems)
            raise StepFailed("phase 2", "; ".join(problems), "TeardownIncomplete")

    async def _inventory(self, service: str, problems: list[str]) -> list[str]:
        assert self.plan is not None
        remaining: list[str] = []
        for target in self.plan.targets:
            try:
                remaining += await self.step(f"{target.env}: list what remains",
                                             TeardownActivities.inventory, target)
            except StepFailed:
                remaining.append(f"{target.env}: unknown (cannot list {target.namespace})")
        if any(p.startswith("delete Jenkins job") for p in problems):
            remaining.append(f"Jenkins job {naming.jenkins_job(service)}")
        if any(p.startswith("archive GitLab project") for p in problems):
            remaining.append(f"GitLab project {service} (not archived)")
        return remaining

    async def _pause_schedules(self, service: str) -> None:
        """No nightly release during the soak; a restore resumes exactly those paused here."""
        assert self.plan is not None
        info = workflow.info()
        self._schedules = pause = SchedulePause(
            service=service, envs=[t.env for t in self.plan.targets],
            note=f"paused by decommission {info.workflow_id} (run {info.run_id})")
        undo = self.saga.add("release schedules resumed", lambda: self.step(  # even half-done
            "undo: resume release schedules", TemporalActivities.unpause_schedules, pause))
        if not await self.step("pause release schedules", TemporalActivities.pause_schedules,
                               pause):
            self.saga.discard(undo)  # nothing paused, nothing to put back

    async def _restore_env(self, fp: Footprint) -> None:
        env = fp.target.env
        await self.step(f"undo: {env}: replicas back", TeardownActivities.scale_restore, fp)
        await self.step(f"undo: {env}: routes back", IstioActivities.restore_routes, fp)

    async def _restored(self) -> Done:
        assert self._restore is not None
        self.set_stage("restoring")
        compensation = await self.compensate()
        if not compensation.complete:
            raise StepFailed("restore", "restore incomplete", "RestoreIncomplete")
        by = self._restore.requested_by
        self.report.restored_by = by
        self.state.notes.append(f"restored by {by}"
                                + (f": {self._restore.reason}" if self._restore.reason else ""))
        return Done("restored", f"{self.report.service} is restored by {by}: "
                    f"{', '.join(compensation.undone)}", outcome="restored")

    def end_message(self, outcome: str, message: str) -> str:
        if self._phase != "phase 2":
            return message
        report: DecommissionReport = self.report
        if outcome == "failed":
            self.state.notes += ["deleted: " + (", ".join(report.deleted) or "nothing"),
                                 "remains: " + (", ".join(report.remaining) or "nothing")]
        why = ("cancelled during phase 2" if outcome == "cancelled"
               else f"phase 2 incomplete after retries: {'; '.join(self._problems)}")
        return (f"{why}; deleted: {', '.join(report.deleted) or 'nothing'}; "
                f"remains: {', '.join(report.remaining) or 'unknown, see the steps'}")

    # --- restore --------------------------------------------------------------------------

    @workflow.query(name=DECOMMISSION_REPORT.name)
    def decommission(self) -> DecommissionReport | None:
        return self.report

    def _restorer(self, req: RestoreRequest) -> str:
        """Who restores: the verified signer of a `restore` of this run, who must be the
        verified requester or a decommission approver."""
        assert self.state is not None and self.plan is not None
        try:
            signer = verify_control(req.signed, "restore", "decommission", self.state.service,
                                    "all", self.signers, self._controls_used, workflow.now())
        except Untrusted as e:
            raise ValueError(str(e)) from None
        if signer.name != req.requested_by:
            raise ValueError(f"restore: signed by {signer}, but the request names "
                             f"{req.requested_by}")
        requester = self.requester.name if self.requester else self.state.requested_by
        allowed = [requester, *self.plan.approval.approvers]
        if signer.name not in allowed:
            raise ValueError(f"{signer.name} may not restore {self.state.service} "
                             f"(allowed: {', '.join(allowed)})")
        return str(signer)

    @workflow.update(name=RESTORE.name)
    async def restore(self, req: RestoreRequest) -> str:
        who = self._restorer(req)
        if req.signed is not None:
            self._controls_used.add(fingerprint(req.signed))
        self._restore = req.model_copy(update={"requested_by": who})
        await workflow.wait_condition(lambda: self.state.outcome != "soaking"
                                      and self.state.stage == "done")
        if self.state.outcome != "restored":
            raise ApplicationError(f"restore did not complete: {self.state.error}",
                                   type="RestoreFailed", non_retryable=True)
        return f"restored {self.state.service}: " + ", ".join(self.state.undone)

    @restore.validator
    def _validate_restore(self, req: RestoreRequest) -> None:
        assert self.state is not None
        if self.plan is None or self.state.stage != "soaking" or self._restore is not None:
            raise ValueError(f"nothing to restore: the decommission of {self.state.service} is "
                             f"{self.state.stage} (restore is possible only while it soaks)")
        self._restorer(req)
