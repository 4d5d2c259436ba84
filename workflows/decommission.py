"""Decommission: retire a service everywhere, reversibly first, irreversibly after a soak.

The runbook: refuse while any operation on the service runs; get approval (always);
phase 1 (reversible), per environment: record routes and replica counts, remove the
routes, scale to 0; soak (default 24 h), during which `restore` puts phase 1 back
exactly; phase 2 (irreversible): delete the Istio objects, the Kubernetes objects and
the Jenkins job, and archive (never delete) the GitLab project; notify. Phase 2
steps are retried; whatever still fails is reported with what was deleted and what
remains.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.gitlab import GitLabActivities
    from activities.jenkins import JenkinsActivities
    from activities.kubernetes.istio import IstioActivities
    from activities.kubernetes.teardown import TeardownActivities
    from activities.operations import OperationsActivities
    from kepler import naming
    from kepler.decommission import (
        DecommissionPlan, DecommissionReport, Footprint, RestoreRequest, RunningQuery,
        TeardownRequest, TeardownResult,
    )
    from kepler.models import DecommissionRequest, Operation
    from workflows.base import ApprovalEnded, KeplerWorkflow, Saga, StepFailed, failure


@workflow.defn(name="Decommission")
class Decommission(KeplerWorkflow):
    def __init__(self) -> None:
        super().__init__()
        self.plan: DecommissionPlan | None = None
        self.report: DecommissionReport | None = None
        self._restore: RestoreRequest | None = None
        self._phase = "checks"

    @workflow.run
    async def run(self, req: DecommissionRequest) -> DecommissionReport:
        self.begin(Operation.DECOMMISSION, req.service, "all", req.requested_by)
        self.report = report = DecommissionReport(service=req.service, outcome="running")
        try:
            self.plan = plan = await self.step("read policy", OperationsActivities.decommission_plan,
                                               req.service)
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
            for target in plan.targets:
                fp: Footprint = await self.step(f"{target.env}: record routes and replicas",
                                                TeardownActivities.record_footprint, target)
                report.recorded.append(fp)
                self.saga.add(f"{target.env}: replicas and routes back",
                              lambda fp=fp: self._restore_env(fp))
                await self.step(f"{target.env}: remove routes", IstioActivities.remove_routes, fp)
                await self.step(f"{target.env}: scale to 0", TeardownActivities.scale_down, fp)

            if await self.soak(req):
                return await self._restored(report)
            self._phase = "phase 2"
            self.saga = Saga()  # past the point of no return
            self.set_outcome("running")
            if self._coalesce:  # not "soaking" any more: a restore is no longer possible
                self.set_stage("deleting")
            await self.phase_two(req.service, report)
        except (StepFailed, ApprovalEnded) as e:
            return await self._fail(e, report)
        except asyncio.CancelledError:
            report.outcome = "cancelled"
            if self._phase == "phase 2":
                self.finish("cancelled", self._phase_two_summary(report, "cancelled during phase 2"))
            else:
                undone = await self.compensate()
                self.finish("cancelled", "cancelled; undone: " + (", ".join(undone) or "nothing"))
            raise
        report.outcome = "succeeded"
        self.finish("succeeded")
        self.state.notes.append("deleted: " + ", ".join(report.deleted))
        await self.notify("decommissioned", f"{req.service} is decommissioned: routes, workloads "
                          "and the Jenkins job deleted; the GitLab project is archived")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    # --- the runbook's parts ------------------------------------------------------------------

    async def refuse_if_busy(self, service: str) -> None:
        assert self.plan is not None
        running: list[str] = await self.step(
            "check running operations", OperationsActivities.running_operations,
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
        problems: list[str] = []

        async def attempt(name: str, activity, arg, deleted: str | None = None) -> None:
            try:
                result = await self.step(name, activity, arg)
            except StepFailed as e:
                problems.append(f"{name}: {e.cause}")
                return
            if isinstance(result, TeardownResult):
                report.deleted += result.deleted
            elif deleted and result is not False:
                report.deleted.append(deleted)

        for target in self.plan.targets:
            await attempt(f"{target.env}: delete Istio objects", TeardownActivities.teardown,
                          TeardownRequest(target=target, part="istio"))
            await attempt(f"{target.env}: delete Kubernetes objects", TeardownActivities.teardown,
                          TeardownRequest(target=target, part="kubernetes"))
        await attempt("delete Jenkins job", JenkinsActivities.delete_job, service,
                      f"Jenkins job {naming.jenkins_job(service)}")
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

    async def _restore_env(self, fp: Footprint) -> None:
        env = fp.target.env
        await self.step(f"undo: {env}: replicas back", TeardownActivities.scale_restore, fp)
        await self.step(f"undo: {env}: routes back", IstioActivities.restore_routes, fp)

    async def _restored(self, report: DecommissionReport) -> DecommissionReport:
        assert self._restore is not None
        self.set_stage("restoring")
        expected = len(self.saga.pending)
        undone = await self.compensate()
        if len(undone) < expected:
            message = "restore incomplete: " + "; ".join(n for n in self.state.notes
                                                         if n.startswith("undo failed"))
            report.outcome, report.error = "failed", message
            self.finish("failed", message)
            await self.notify("failed", message)
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise failure(message, "failed")
        report.outcome, report.restored_by = "restored", self._restore.requested_by
        self.finish("restored")
        self.state.notes.append(f"restored by {self._restore.requested_by}"
                                + (f": {self._restore.reason}" if self._restore.reason else ""))
        await self.notify("restored", f"{report.service} is restored by "
                          f"{self._restore.requested_by}: {', '.join(undone)}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    def _phase_two_summary(self, report: DecommissionReport, why: str) -> str:
        return (f"{why}; deleted: {', '.join(report.deleted) or 'nothing'}; "
                f"remains: {', '.join(report.remaining) or 'unknown, see the steps'}")

    async def _fail(self, error: Exception, report: DecommissionReport) -> DecommissionReport:
        if isinstance(error, ApprovalEnded):
            outcome, message = error.outcome, str(error)
        elif self._phase == "phase 2":
            outcome = "failed"
            message = self._phase_two_summary(report, f"phase 2 incomplete after retries: {error.cause}")
            self.state.notes += ["deleted: " + (", ".join(report.deleted) or "nothing"),
                                 "remains: " + (", ".join(report.remaining) or "nothing")]
        else:
            outcome = "rolled_back" if self.saga.pending else "failed"
            message = f"step '{error.step}' failed: {error.cause}"
        undone = await self.compensate()
        if self._phase != "phase 2" and not isinstance(error, ApprovalEnded):
            message += f"; undone: {', '.join(undone) or 'nothing'}"
        report.outcome, report.error = outcome, message
        self.finish(outcome, message)
        await self.notify(outcome, message)
        await workflow.wait_condition(workflow.all_handlers_finished)
        raise failure(message, outcome)

    # --- restore --------------------------------------------------------------------------

    @workflow.query
    def decommission(self) -> DecommissionReport | None:
        return self.report

    @workflow.update
    async def restore(self, req: RestoreRequest) -> str:
        self._restore = req
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
        allowed = [self.state.requested_by, *self.plan.approval.approvers]
        if req.requested_by not in allowed:
            raise ValueError(f"{req.requested_by} may not restore {self.state.service} "
                             f"(allowed: {', '.join(allowed)})")
