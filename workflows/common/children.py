"""One way a coordinator (train, release schedule, automatic promotion) runs a child
operation: start it under its lock's id, wait for it and map its ending to an outcome.
A busy id (another operation holds it) is an ending of its own, `busy`, for the caller to
skip, retry or fail on."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from kepler.contracts import BY_REQUEST, outcome_of_error
    from workflows.common.errors import not_put_back_of
    from workflows.common.saga import describe_cause


class ChildEnding(NamedTuple):
    outcome: str  # the child's outcome, or "busy" when it could not start
    report: Any = None  # the child's report when it succeeded
    message: str = ""
    not_put_back: tuple[str, ...] = ()  # what the child says it could not put back


async def child_operation(request: Any, child_id: str, summary: str,
                          started: Callable[[str], None] | None = None,
                          **options: Any) -> ChildEnding:
    """Start the operation `request` asks for (its workflow type and report from the
    registry) as a child with id `child_id`, and wait for its ending. `started(run_id)` is
    called once it runs; cancellation propagates (a cancelled child compensates itself)."""
    operation = BY_REQUEST[type(request)]
    try:
        handle = await workflow.start_child_workflow(
            operation.workflow, request, id=child_id, result_type=operation.result,
            static_summary=summary, **options)
    except WorkflowAlreadyStartedError:
        return ChildEnding("busy", message=f"{child_id} is busy with another operation")
    if started is not None:
        started(handle.first_execution_run_id or "")
    try:
        report = await handle
    except ChildWorkflowError as e:
        message, kind = describe_cause(e)
        return ChildEnding(outcome_of_error(kind), message=message,
                           not_put_back=tuple(not_put_back_of(e)))
    return ChildEnding(getattr(report, "outcome", "succeeded"), report)
