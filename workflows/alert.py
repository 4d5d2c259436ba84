"""AlertAction: what Kepler did about one firing alert, recorded and notified.

Started by POST /alertmanager with the id `alert-<service>@<env>-<fingerprint>-<startsAt>`,
so a second delivery of the same firing alert is refused by Temporal and does nothing
new. It starts a Rollback to the previous version on the `<service>@<env>` lock, or,
when an operation holds the lock, aborts it if it is a canary, or records that it
left the running operation alone.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import ALERT_ACTION
    from activities.alerts import AlertActivities
    from kepler.alerts import AlertActionRequest, AlertOutcome
    from kepler.models import Operation
    from workflows.base import Done, KeplerWorkflow


@workflow.defn(name=ALERT_ACTION.workflow)
class AlertAction(KeplerWorkflow[AlertOutcome]):
    @workflow.run
    async def run(self, req: AlertActionRequest) -> AlertOutcome:
        return await self.operate(Operation.ALERT, req.service, req.env, req.requested_by,
                                  req.alertname, lambda: self.runbook(req), req)

    async def runbook(self, req: AlertActionRequest) -> Done:
        assert self.state is not None
        self.state.notes.append(f"alert {req.alertname} ({req.fingerprint}) firing since "
                                f"{req.starts_at.isoformat()}; matched {req.rule}")
        self.report = outcome = await self.step("act on the alert", AlertActivities.act, req)
        self.state.notes.append(outcome.detail)
        return Done("alert", f"alert {req.alertname} firing for {req.service} in "
                    f"{req.env}: {outcome.detail}")

    def end_message(self, outcome: str, message: str) -> str:
        return f"alert {self.state.version}: {message}"
