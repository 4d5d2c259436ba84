"""The Kepler worker: every workflow and activity on one task queue.

Workers are stateless; run as many as you like against one Temporal cluster.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from kepler.settings import Platform, Secrets, load_platform
from kepler.temporal import connect

log = logging.getLogger("kepler.worker")
# Activity slots and threads: waits (rollouts, builds) hold a slot for their whole length,
# so 64 slots starved the short steps of 200 concurrent releases (bench/RESULTS.md); idle
# threads cost little.
ACTIVITY_SLOTS = 256


def build_worker(client: Client, platform: Platform, secrets: Secrets,
                 executor: ThreadPoolExecutor, task_queue: str | None = None) -> Worker:
    import activities
    import workflows
    from activities.authority import authority_for
    from workflows.common.starts import RefuseUnexpectedStarts

    queue = task_queue or platform.temporal.task_queue
    types = [workflow_type(w) for w in workflows.ALL]
    return Worker(
        client,
        task_queue=queue,
        workflows=workflows.ALL,
        activities=activities.build(platform, secrets, client),
        # who may call Kepler's activities and what runs may carry: activities/authority.py
        interceptors=[authority_for(platform, secrets, client, queue, types),
                      RefuseUnexpectedStarts()],
        activity_executor=executor,
        # one slot per thread: more would queue in the executor, fewer would idle threads
        max_concurrent_activities=executor._max_workers,
    )


def workflow_type(cls: type) -> str:
    from temporalio.workflow import _Definition

    return _Definition.must_from_class(cls).name or cls.__name__


async def run(platform: Platform | None = None) -> None:
    platform = platform or load_platform()
    secrets = Secrets()
    from kepler import telemetry

    client = await connect(platform.temporal.address, platform.temporal.namespace,
                           runtime=telemetry.runtime(), interceptors=telemetry.tracing_interceptors(),
                           **platform.temporal.connect_options())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_SLOTS, thread_name_prefix="kepler-activity") as executor:
        worker = build_worker(client, platform, secrets, executor)
        log.info("worker polling task queue %s on %s", platform.temporal.task_queue,
                 platform.temporal.address)
        async with worker:
            await stop.wait()
            log.info("shutting down: finishing or handing back running activities")
    log.info("worker stopped")


def main() -> None:
    from kepler.telemetry import configure_logging

    configure_logging()  # KEPLER_LOG_FORMAT=json for one JSON object a line
    asyncio.run(run())


if __name__ == "__main__":
    main()
