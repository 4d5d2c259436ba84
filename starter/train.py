"""`kepler train`: several services released as one train (dependency order, one
approval, all or nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from kepler.models import OperationStatus
from kepler.clients import operations as operations_client
from kepler.contracts import TRAIN_REPORT
from kepler.clients.operations import Started
from kepler.train import TrainReport, TrainRequest
from kepler.validation import describe_validation_error
from starter import session
from starter.cli_common import (
    BAD_INPUT, FAILED, OK, AfterFreezeOpt, AsOpt, CliError, WatchOpt, command, console, emit,
    new_table,
)


def register(app: typer.Typer) -> None:
    @command(app)
    def train(file: Path = typer.Option(..., "-f", "--file", help="train YAML: name, env, members"),
              env: Optional[str] = typer.Option(None, "--env", "-e", help="overrides the file's env"),
              reason: str = "", watch_it: bool = WatchOpt, after_freeze: bool = AfterFreezeOpt,
              as_user: Optional[str] = AsOpt, *, as_json: bool) -> int:
        """Release several services as one train: dependency order, one approval, all or nothing."""
        p = session.platform()
        req = read_train(file, env, session.acting_user(p, as_user), reason)
        if after_freeze:
            req = req.model_copy(update={"after_freeze": True})
        session.check_env(p, req.env)
        return session.run(session.launch(
            p, req, watch_it, as_json, finish=report_train,
            hint=f"approve with: kepler approve {req.service} --env {req.env}"))


def read_train(file: Path, env: str | None, requested_by: str, reason: str) -> TrainRequest:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"{file}: {e}", BAD_INPUT) from None
    if not isinstance(data, dict):
        raise CliError(f"{file}: must be a mapping with name, env and members", BAD_INPUT)
    data = {**data, "requested_by": requested_by}
    if env:
        data["env"] = env
    if reason:
        data["reason"] = reason
    try:
        return TrainRequest.model_validate(data)
    except ValidationError as e:
        raise CliError(f"{file}: " + describe_validation_error(e).removeprefix("input: "),
                       BAD_INPUT) from None


def member_table(report: TrainReport) -> Table:
    table = new_table(f"train {report.name} to {report.env}: {report.outcome}")
    for col in ("wave", "service", "ref", "outcome", "image", "detail"):
        table.add_column(col, overflow="fold")
    for m in report.members:
        table.add_row(str(m.wave), m.service, m.ref, m.outcome, m.image.rsplit("@", 1)[-1][:19],
                      m.error or m.rollback)
    return table


async def report_train(started: Started, link: str, last: OperationStatus | None,
                       as_json: bool) -> int:
    """A watched train's end: each member's outcome (the train's report), failed or not."""
    try:
        await started.handle.result()
        code = OK
    except Exception:  # noqa: BLE001 - the outcome is in the report
        code = FAILED
    report = await operations_client.query(started.handle, TRAIN_REPORT)
    data = {"workflow_id": started.workflow_id, "ui": link, "report": report}
    if as_json:
        emit(data, True)
    else:
        console.print(member_table(report))
        if last and last.error:
            console.print(f"[red]{last.error}[/red]")
        console.print(link)
    return code
