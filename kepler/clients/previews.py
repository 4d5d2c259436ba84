"""The previews running now, as their workflows say (the Temporal client side of
`kepler preview`)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.service import RPCError

from kepler import search_attributes as sa
from kepler.clients.operations import Refused, cancel
from kepler.contracts import PREVIEW, STATUS
from kepler.models import OperationStatus
from kepler.previews import preview_workflow_id

MAX_LISTED = 500


async def running(client: Client, service: str | None = None) -> list[OperationStatus]:
    """Each running preview's status (of one service, or all), oldest first."""
    query = f"WorkflowType = '{PREVIEW.workflow}' AND ExecutionStatus = 'Running'"
    if service:
        query += f" AND {sa.SERVICE.name} = '{service}'"
    found = []
    async for run in client.list_workflows(query, limit=MAX_LISTED):
        try:
            found.append((run.start_time, await client.get_workflow_handle(run.id).query(
                STATUS.name, result_type=OperationStatus)))
        except RPCError:
            continue  # ended meanwhile
    return [status for _, status in sorted(found, key=lambda f: f[0])]


async def show(client: Client, service: str, mr: int) -> OperationStatus:
    handle = client.get_workflow_handle(preview_workflow_id(service, mr))
    try:
        return await handle.query(STATUS.name, result_type=OperationStatus)
    except RPCError:
        raise Refused(f"{handle.id}: no preview of {service} !{mr}") from None


async def stop(client: Client, service: str, mr: int) -> str:
    """Cancel the preview: it deletes what is its own, says so on the merge request, ends."""
    workflow_id = preview_workflow_id(service, mr)
    await cancel(client, workflow_id, f"no preview of {service} !{mr} runs")
    return workflow_id
