"""`kepler preview list|show|stop|hooks`: the preview environments of merge requests
(README: Preview environments)."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from kepler.clients import previews as previews_client
from kepler.models import OperationStatus
from kepler.validation import service_name
from starter import session
from starter.cli_common import BAD_INPUT, OK, CliError, command, emit, subject_app, new_table

MrOpt = typer.Option(..., "--mr", help="the merge request's iid (!N)", min=1, max=10**9)


def _service(value: str) -> str:
    try:
        return service_name(value)
    except ValueError as e:
        raise CliError(f"SERVICE: {e}", BAD_INPUT) from None


def _row(status: OperationStatus) -> dict[str, Any]:
    p = status.preview
    return {"service": status.service, "mr": p.mr if p else None, "stage": status.stage,
            "url": p.url if p else "", "deployed": (p.deployed_sha[:12] if p else ""),
            "last_push": p.last_push_at.isoformat() if p and p.last_push_at else "",
            "expires": p.expires_at.isoformat() if p and p.expires_at else "",
            "title": p.title if p else "", "error": p.last_error if p else ""}


def table(rows: list[dict[str, Any]]) -> Table:
    t = new_table(show_header=True)
    for col in ("service", "mr", "stage", "url", "deployed", "last push", "expires"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["service"], f"!{r['mr']}", r["stage"], r["url"] or "-", r["deployed"] or "-",
                  r["last_push"][:16] or "-", r["expires"][:16] or "-")
    return t


def register(app: typer.Typer) -> None:
    preview_app = subject_app("Preview environments of merge requests.", no_args_is_help=True)

    @command(preview_app, "list")
    def list_previews(service: Optional[str] = typer.Argument(None), *, as_json: bool) -> int:
        """The previews running now (of SERVICE, or all), oldest first."""
        p = session.platform()
        name = _service(service) if service else None

        async def go() -> list[OperationStatus]:
            return await previews_client.running(await session.client(p), name)

        rows = [_row(s) for s in session.run(go())]
        emit(rows, as_json, None if as_json else (table(rows) if rows else "no previews"))
        return OK

    @command(preview_app, "show")
    def show(service: str, mr: int = MrOpt, *, as_json: bool) -> int:
        """One preview: its URL, what it runs, its steps and notes."""
        p = session.platform()
        name = _service(service)

        async def go() -> OperationStatus:
            return await previews_client.show(await session.client(p), name, mr)

        status = session.run(go())
        row = _row(status)
        text = "\n".join(f"{k}: {v}" for k, v in row.items() if v) + (
            "\nnotes:\n  " + "\n  ".join(status.notes) if status.notes else "")
        emit({**row, "outcome": status.outcome, "notes": status.notes}, as_json, text)
        return OK

    @command(preview_app, "stop")
    def stop(service: str, mr: int = MrOpt, *, as_json: bool) -> int:
        """Tear the preview of merge request !MR down now (its namespace, then a note on it)."""
        p = session.platform()
        name = _service(service)

        async def go() -> str:
            return await previews_client.stop(await session.client(p), name, mr)

        workflow_id = session.run(go())
        emit({"workflow_id": workflow_id, "result": "stopping"}, as_json,
             f"{workflow_id}: stopping (its namespace is deleted, the merge request told)")
        return OK

    @command(preview_app, "hooks", output=False)
    def hooks(host: str = typer.Option("127.0.0.1", "--host"),
              port: int = typer.Option(8091, "--port", min=1, max=65535)) -> int:
        """Serve GitLab's merge request webhook (POST /gitlab/merge-requests; its secret
        token: KEPLER_GITLAB_HOOK_TOKEN)."""
        from starter import preview_hooks

        return session.serve(preview_hooks.serve, preview_hooks.NotConfigured, host, port)

    app.add_typer(preview_app, name="preview")
