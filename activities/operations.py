"""The platform's own view of operations: the decommission plan from kepler.yaml, and
which operations on a service are running right now (Temporal)."""

from __future__ import annotations


from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import retryable
from kepler import naming
from kepler import search_attributes as sa
from kepler.decommission import DecommissionPlan, EnvTarget, RunningQuery
from kepler.settings import Platform
from kepler.temporal import LazyClient


class OperationsActivities:
    def __init__(self, platform: Platform, client: Client | None = None) -> None:
        self.platform = platform
        self._temporal = LazyClient(platform.temporal, client)

    async def client(self) -> Client:
        return await self._temporal.get()

    @activity.defn(name="platform.decommission_plan")
    async def decommission_plan(self, service: str) -> DecommissionPlan:
        return DecommissionPlan(
            approval=self.platform.decommission_approval(), policy=self.platform.decommission,
            builder=self.platform.builder,
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
