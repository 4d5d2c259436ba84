"""Runs Kepler never starts itself are refused before any workflow code runs: a cron
schedule or a retry policy would start a run again, on the server's say, from a first run
an attacker chose (and such a run 'continues' another as far as workflow.info() goes). No
Kepler workflow type expects either: each is started once, by the client module, a parent,
a Temporal Schedule or its own continue-as-new."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ExecuteWorkflowInput, Interceptor, WorkflowInboundInterceptor, WorkflowInterceptorClassInput,
)


class _RefuseUnexpectedStarts(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        why = ("a cron schedule" if info.cron_schedule else
               "a retry policy" if info.retry_policy is not None else "")
        if why:
            raise ApplicationError(f"{info.workflow_type} {info.workflow_id} was started with {why}: "
                                   "Kepler never starts its operations so, and refuses them",
                                   type="Unauthorized", non_retryable=True)
        return await super().execute_workflow(input)


class RefuseUnexpectedStarts(Interceptor):
    def workflow_interceptor_class(
            self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor] | None:
        return _RefuseUnexpectedStarts
