"""The `kepler` command line: the Typer app, assembled from one module per subject.
Command forms, options, output and exit codes are a contract (tests check them); the
order commands register in is the order `kepler --help` lists them."""

from __future__ import annotations

import os
import sys

import typer
from rich.text import Text

from kepler.settings import ConfigError, load_platform
from starter import (
    alerts, audit, canary, chatops, codec_server, console, decommission, demo, dev, freeze, jobs,
    metrics, previews, release, scale, schedule, service, train,
)
from starter.cli_common import BAD_INPUT, FAILED, OK, CliError, command, emit, subject_app

app = subject_app("Kepler: durable delivery pipelines on Temporal.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


@command(app, output=False)
def worker(build_id: str = typer.Option(
        "", "--build-id", envvar="KEPLER_BUILD_ID", show_default=False,
        help="join the Worker Deployment (temporal.deployment_name) as this version: worker "
             "versioning, each run pinned to the version it started on (README: Upgrading Kepler)")) -> int:
    """Run a worker with every workflow and activity (stops cleanly on SIGTERM/SIGINT)."""
    import worker as worker_module

    try:
        worker_module.deployment_config(load_platform(), build_id or None)
    except ConfigError as e:
        raise CliError(str(e), BAD_INPUT) from None
    worker_module.main(build_id or None)
    return OK


@command(app, "upgrade-check")
def upgrade_check(*, as_json: bool) -> int:
    """Before deploying a release that retires patches: replay every open run on the task
    queue against this code; exit 1 lists each run that would fail (docs/architecture.md,
    Patches)."""
    import worker as worker_module
    from starter import session

    p = session.platform()

    async def check() -> tuple[int, list]:
        client = await session.client(p)
        return await worker_module.replay_open_runs(client, p.temporal.task_queue)

    checked, failing = session.run(check())
    data = {"checked": checked, "failing": [f._asdict() for f in failing]}
    lines = [f"{checked} open run(s) on {p.temporal.task_queue} replayed against this code: "
             + (f"{len(failing)} would fail" if failing else "all replay")]
    lines += [f"  {f.workflow_type} {f.workflow_id} (run {f.run_id}): {f.error[:300]}"
              for f in failing]
    emit(data, as_json, Text("\n".join(lines)))  # errors hold [brackets]: no markup
    return FAILED if failing else OK


for subject in (dev, release, service, jobs, alerts, train, scale, schedule, canary, freeze, demo,
                decommission, audit, metrics, chatops, codec_server, console, previews):
    subject.register(app)


def main() -> None:
    """Entry point. Exits with the command's real code even if the Temporal SDK's
    runtime would crash at interpreter exit (temporalio/sdk-python#300)."""
    code = 0
    try:
        result = app(standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as e:  # click's usage errors (typer vendors click): show, exit 2
        if not (hasattr(e, "show") and hasattr(e, "exit_code")):
            raise
        e.show()
        code = e.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
