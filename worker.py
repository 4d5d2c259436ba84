"""The Kepler worker: every workflow and activity on one task queue.

Workers are stateless; run as many as you like against one Temporal cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, NamedTuple, Sequence

from temporalio.client import Client, WorkflowHistory
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkerDeploymentConfig

from kepler.settings import ConfigError, Platform, Secrets, load_platform
from kepler.clients.temporal import connect

log = logging.getLogger("kepler.worker")
# Activity slots and threads: waits (rollouts, builds) hold a slot for their whole length,
# so 64 slots starved the short steps of 200 concurrent releases (bench/RESULTS.md); idle
# threads cost little.
ACTIVITY_SLOTS = 256
BUILD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def deployment_config(platform: Platform, build_id: str | None) -> WorkerDeploymentConfig | None:
    """Worker versioning: given a build id, the worker joins the Worker Deployment
    `temporal.deployment_name` as version <name>:<build id>, and every workflow it starts is
    pinned to that version, activities included, until it ends (README: Upgrading Kepler).
    A promotion coordinator that continues as new starts its next run on the deployment's
    current version (workflows/common/continuation.py); a canary stays on its version across
    continue-as-new (its carried state is sealed by that version). Without a build id: an
    unversioned worker, as on the dev server."""
    if not build_id:
        return None
    if not BUILD_ID.fullmatch(build_id):
        raise ConfigError(f"KEPLER_BUILD_ID: {build_id[:40]!r} must be 1-128 letters, digits, '.', "
                          "'_', '+' or '-', starting with a letter or digit")
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(platform.temporal.deployment_name, build_id),
        use_worker_versioning=True, default_versioning_behavior=VersioningBehavior.PINNED)


def build_worker(client: Client, platform: Platform, secrets: Secrets,
                 executor: ThreadPoolExecutor, task_queue: str | None = None,
                 build_id: str | None = None, workflow_classes: Sequence[type] | None = None) -> Worker:
    import activities
    import workflows
    from activities.authority import authority_for
    from workflows.common.starts import RefuseUnexpectedStarts

    queue = task_queue or platform.temporal.task_queue
    classes = list(workflow_classes or workflows.ALL)
    types = [workflow_type(w) for w in classes]
    return Worker(
        client,
        task_queue=queue,
        workflows=classes,
        deployment_config=deployment_config(platform, build_id),
        activities=activities.build(platform, secrets, client),
        # who may call Kepler's activities and what runs may carry: activities/authority.py
        interceptors=[authority_for(platform, secrets, client, queue, types),
                      RefuseUnexpectedStarts()],
        activity_executor=executor,
        # one slot per thread: more would queue in the executor, fewer would idle threads
        max_concurrent_activities=executor._max_workers,
        # The sandbox re-imports the workflow modules for every run: ~70 % of the worker's
        # CPU a release (bench/RESULTS.md, issue 31). Determinism is checked where it can
        # fail a build instead: every workflow test and every recorded history runs in the
        # full sandbox (tests/workflows), and tests/test_determinism.py reads workflows/
        # for what the sandbox would refuse.
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


class ReplayFailure(NamedTuple):
    """An open run whose history the code checked does not replay: it would fail (its
    workflow task, for ever) on a worker running that code."""
    workflow_id: str
    run_id: str
    workflow_type: str
    error: str


async def replay_open_runs(client: Client, task_queue: str,
                           workflow_classes: Sequence[type] | None = None,
                           ) -> tuple[int, list[ReplayFailure]]:
    """`kepler upgrade-check`: replay the history of every open run on `task_queue` against
    `workflow_classes` (default: this code's, workflows.ALL), as a worker would after the
    upgrade; (how many runs were replayed, those that fail). A run of a type the classes do
    not define fails too (no worker would take it any more)."""
    from temporalio.worker import Replayer

    from kepler.clients.temporal import data_converter
    from workflows.common.starts import RefuseUnexpectedStarts

    if workflow_classes is None:
        import workflows

        workflow_classes = workflows.ALL
    known = {workflow_type(cls) for cls in workflow_classes}
    runs: dict[str, tuple[str, str]] = {}  # run id: (workflow id, type)
    unknown: list[ReplayFailure] = []

    async def histories() -> AsyncIterator[WorkflowHistory]:
        query = f'ExecutionStatus="Running" AND TaskQueue="{task_queue}"'
        async for run in client.list_workflows(query):
            runs[run.run_id] = (run.id, run.workflow_type)
            if run.workflow_type not in known:
                unknown.append(ReplayFailure(run.id, run.run_id, run.workflow_type,
                                             "no workflow of this type in the code checked"))
                continue
            yield await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()

    replayer = Replayer(workflows=list(workflow_classes), data_converter=data_converter(),
                        interceptors=[RefuseUnexpectedStarts()])
    result = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    failures = unknown + [ReplayFailure(runs[run_id][0], run_id, runs[run_id][1], str(error))
                          for run_id, error in result.replay_failures.items()]
    return len(runs), sorted(failures)


def workflow_type(cls: type) -> str:
    from temporalio.workflow import _Definition

    return _Definition.must_from_class(cls).name or cls.__name__


async def run(platform: Platform | None = None, build_id: str | None = None) -> None:
    platform = platform or load_platform()
    build_id = build_id or os.environ.get("KEPLER_BUILD_ID") or None
    deployment_config(platform, build_id)  # a bad build id fails before connecting
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
        worker = build_worker(client, platform, secrets, executor, build_id=build_id)
        log.info("worker polling task queue %s on %s%s", platform.temporal.task_queue,
                 platform.temporal.address,
                 f" as version {platform.temporal.deployment_name}:{build_id}" if build_id else "")
        async with worker:
            await stop.wait()
            log.info("shutting down: finishing or handing back running activities")
    log.info("worker stopped")


def main(build_id: str | None = None) -> None:
    from kepler.telemetry import configure_logging

    configure_logging()  # KEPLER_LOG_FORMAT=json for one JSON object a line
    asyncio.run(run(build_id=build_id))


if __name__ == "__main__":
    main()
