"""What several console pages read: the services Kepler created (with each one's spec, from
its create run's request, kept once read: a run's input never changes) and the operations
running now. Through the same client modules as the CLI (Temporal visibility, queries)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from temporalio.client import Client
from temporalio.service import RPCError

from kepler import search_attributes as sa
from kepler.models import CreateServiceRequest
from kepler.spec import ServiceSpec
from starter.service import operations_of

CREATED = f"{sa.OPERATION.name} IN ('create', 'decommission') AND {sa.OUTCOME.name} = 'succeeded'"
RUNNING = "ExecutionStatus = 'Running'"
MAX_SERVICES = 2000
SPEC_READS = 16  # create runs read at once


@dataclass
class ServiceRow:
    name: str
    team: str
    owners: list[str]
    environments: list[str]
    running: list[dict[str, str]] = field(default_factory=list)


class Specs:
    """Each service's spec, as its create run was asked for it, by create run id."""

    def __init__(self) -> None:
        self._by_run: dict[str, ServiceSpec | None] = {}
        self._reads = asyncio.Semaphore(SPEC_READS)

    async def of(self, client: Client, workflow_id: str, run_id: str) -> ServiceSpec | None:
        if run_id not in self._by_run:
            async with self._reads:
                self._by_run[run_id] = await self._read(client, workflow_id, run_id)
        return self._by_run[run_id]

    async def _read(self, client: Client, workflow_id: str, run_id: str) -> ServiceSpec | None:
        try:
            async for event in client.get_workflow_handle(workflow_id, run_id=run_id) \
                    .fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [req] = await client.data_converter.decode(payloads[:1], [CreateServiceRequest])
                return req.spec
        except (RPCError, ValueError, TypeError):
            return None
        return None


async def services(client: Client, specs: Specs, envs: list[str]) -> list[ServiceRow]:
    """Every service Kepler created and has not decommissioned, by name, with what runs now."""
    created = await operations_of(client, CREATED, MAX_SERVICES)
    latest: dict[str, dict[str, str]] = {}
    for row in created:  # newest first: a create after a decommission lists it again
        latest.setdefault(row["service"], row)
    alive = sorted((r for r in latest.values() if r["operation"] == "create"),
                   key=lambda r: r["service"])
    found = await asyncio.gather(*(specs.of(client, r["workflow_id"], r["run_id"]) for r in alive))
    running = await operations_of(client, RUNNING, MAX_SERVICES)
    rows = []
    for r, spec in zip(alive, found):
        rows.append(ServiceRow(
            name=r["service"], team=spec.team if spec else "", owners=list(spec.owners) if spec else [],
            environments=[e for e in envs if spec is None or not spec.environments
                          or e in spec.environments],
            running=[o for o in running if o["service"] == r["service"]]))
    return rows
