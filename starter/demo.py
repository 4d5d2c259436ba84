"""`kepler demo`: a guided tour against the sandbox, watchable in the Temporal UI.

1. create the service `demo-shop` (GitLab project, Jenkins job, objects in every env);
2. release v1 to staging; 3. release v1 to prod, which needs approval, and approve
it as a second configured user; 4. release a bad v2 (its commit says it crashes)
that rolls back automatically, image and config; 5. a release whose database migration
(its pre_deploy hook) fails: v1 keeps running and the migration's undo runs; 6. a
canary of a good v2 in staging:
traffic shifts 20 % then 50 % while the analysis passes, then it is promoted; 7. a
blue-green release of v1 beside the live v2: all traffic switches in one route write, and
`kepler rollback` in its rollback window switches it back in one more; then print the UI
links.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Optional

import gitlab
import typer
import yaml
from temporalio.client import Client
from temporalio.service import RPCError

from kepler.clients import operations as operations_client
from kepler.canary import CanaryControl
from kepler.models import CanaryRequest, CreateServiceRequest, ReleaseRequest
from kepler.spec import ServiceSpec
from kepler.clients.operations import Started
from kepler.settings import Platform, Secrets
from starter import session, signing
from starter.canary import control_signer
from starter.cli_common import FAILED, CliError, OutputOpt, console, fail, first_sentence, section
from starter.watch import watch

SERVICE = "demo-shop"
APPROVAL_WITHIN_S = 120  # how long the demo waits for the prod release to ask for approval
SPEC = ServiceSpec(name=SERVICE, team="demo", template="python", replicas=2, owners=["dev", "alice"],
                   config_files={"app.conf": "greeting=hello from v1\n"},
                   environments={"prod": {"replicas": 3}})


def prepare_repository(p: Platform) -> None:
    """What a developer would push: tag v1, a branch bad-v2 whose build crashes, and a
    healthy branch v2 for the canary."""
    gl = gitlab.Gitlab(p.gitlab.url, private_token=Secrets().gitlab_token.get_secret_value())
    project = gl.projects.get(f"{p.gitlab.group}/{SERVICE}")
    names = {t.name for t in project.tags.list(get_all=True)}
    if "v1" not in names:
        project.tags.create({"tag_name": "v1", "ref": project.default_branch or "main"})
    if "bad-v2" not in {b.name for b in project.branches.list(get_all=True)}:
        project.branches.create({"branch": "bad-v2", "ref": "v1"})
        spec = SPEC.model_dump(mode="json", exclude_defaults=True)
        spec["config_files"] = {"app.conf": "greeting=hello from v2\n"}
        project.commits.create({"branch": "bad-v2", "commit_message": "v2: new greeting (crashes)",
                                "actions": [
            {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"},
            {"action": "update", "file_path": ".kepler/service.yaml",
             "content": yaml.safe_dump({"name": SERVICE, **spec}, sort_keys=False)}]})
    if "bad-migration" not in {b.name for b in project.branches.list(get_all=True)}:
        project.branches.create({"branch": "bad-migration", "ref": "v1"})
        spec = SPEC.model_dump(mode="json", exclude_defaults=True)
        spec["hooks"] = {"pre_deploy": {"command": ["./migrate", "up"],
                                        "undo": {"command": ["./migrate", "down"]}}}
        project.commits.create({"branch": "bad-migration", "commit_message": "v2: migrate "
                                "(the migration fails)", "actions": [
            {"action": "create", "file_path": "kepler-sandbox.yaml",
             "content": "hooks: {pre_deploy: fail}\n"},
            {"action": "update", "file_path": ".kepler/service.yaml",
             "content": yaml.safe_dump({"name": SERVICE, **spec}, sort_keys=False)}]})
    if "v2" not in {b.name for b in project.branches.list(get_all=True)}:
        project.branches.create({"branch": "v2", "ref": "v1"})
        spec = SPEC.model_dump(mode="json", exclude_defaults=True)
        spec["config_files"] = {"app.conf": "greeting=hello from v2\n"}
        project.commits.create({"branch": "v2", "commit_message": "v2: new greeting", "actions": [
            {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "latency_ms: 80\n"},
            {"action": "update", "file_path": ".kepler/service.yaml",
             "content": yaml.safe_dump({"name": SERVICE, **spec}, sort_keys=False)}]})


async def run_step(p: Platform, title: str, req: Any, approver: str | None = None,
                   expect_failure: bool = False) -> str:
    section(title)
    client = await session.client(p)
    started = await operations_client.start(client, session.signed(p, req), p.temporal.task_queue)
    link = session.ui_link(p, started.workflow_id, started.run_id)
    console.print(f"workflow [bold]{started.workflow_id}[/bold]  {link}")
    if approver:
        await _approve_when_pending(client, p, started, req, approver)
    await watch(started.handle)
    try:
        await started.handle.result()
        failed = False
    except Exception:  # noqa: BLE001 - the outcome is shown by the watch view
        failed = True
    if failed != expect_failure:
        status = await operations_client.status(client, started.workflow_id)
        said = f": {status.error}" if status.error else ""
        raise CliError(f"demo: {title}: ended {status.outcome}{said} (expected "
                       f"{'a failure' if expect_failure else 'success'}); see {link}", FAILED)
    return link


async def _approve_when_pending(client: Client, p: Platform, started: Started,
                                req: ReleaseRequest, approver: str) -> None:
    """Approve as `approver` once the release waits for it; nothing to do when it ended
    first (refused, failed): its own message says why."""
    deadline = asyncio.get_running_loop().time() + APPROVAL_WITHIN_S
    stage = "starting"
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await operations_client.status(client, started.workflow_id)
        except RPCError:  # not picked up yet
            await asyncio.sleep(0.2)
            continue
        stage = status.stage
        if status.pending_approval:
            console.print(f"{req.requested_by} may not approve their own release; "
                          f"[bold]{approver}[/bold] approves it")
            await signing.decide(client, p, req.service, req.env, "approve", approver,
                                 "demo: looks good")
            return
        if status.outcome != "running":
            return
        await asyncio.sleep(0.2)
    raise CliError(f"demo: {started.workflow_id} asked for no approval within "
                   f"{APPROVAL_WITHIN_S} s (stage: {stage})", FAILED)


async def run_demo(p: Platform, user: str) -> list[str]:
    links = [await run_step(p, "1. create the service", CreateServiceRequest(
        spec=SPEC, requested_by=user, reason="kepler demo"))]
    await asyncio.get_running_loop().run_in_executor(None, prepare_repository, p)
    links.append(await run_step(p, "2. release v1 to staging", ReleaseRequest(
        service=SERVICE, env="staging", ref="v1", requested_by=user, reason="demo")))
    prod = p.environments.get("prod")
    if prod is not None:
        approver = next((a for a in prod.approval.approvers if a != user), None)
        links.append(await run_step(p, "3. promote staging's v1 to prod, exactly (needs approval)",
                                    ReleaseRequest(service=SERVICE, env="prod", from_env="staging",
                                                   requested_by=user, reason="demo"),
            approver=approver if prod.approval.required else None))
    links.append(await run_step(p, "4. release a bad v2 to staging: it crashes and rolls back",
                                ReleaseRequest(service=SERVICE, env="staging", ref="bad-v2",
                                               requested_by=user, reason="demo"),
                                expect_failure=True))
    links.append(await run_step(p, "5. a release whose migration fails: undone, v1 keeps running",
                                ReleaseRequest(service=SERVICE, env="staging", ref="bad-migration",
                                               requested_by=user, reason="demo"),
                                expect_failure=True))
    links.append(await run_step(p, "6. canary of a good v2 in staging: 20 %, 50 %, promoted",
                                CanaryRequest(service=SERVICE, env="staging", ref="v2",
                                              steps=[20, 50], interval=timedelta(seconds=10),
                                              requested_by=user, reason="demo")))
    links.append(await run_blue_green(p, user))
    return links


async def run_blue_green(p: Platform, user: str) -> str:
    """Step 7, as `kepler release --strategy blue-green` then `kepler rollback` do it."""
    title = "7. blue-green: v1 beside v2, one switch, then kepler rollback switches back"
    section(title)
    client = await session.client(p)
    req = ReleaseRequest(service=SERVICE, env="staging", ref="v1", strategy="blue-green",
                         requested_by=user, reason="demo")
    started = await operations_client.start(client, session.signed(p, req), p.temporal.task_queue)
    link = session.ui_link(p, started.workflow_id, "")
    console.print(f"workflow [bold]{started.workflow_id}[/bold]  {link}")
    status = None
    for _ in range(1200):
        try:  # (for a moment, as the release hands over, the new run answers no query yet)
            status = await operations_client.status(client, started.workflow_id)
        except RPCError:
            status = None
        if status is not None and (status.stage == "rollback window" or status.outcome != "running"):
            break
        await asyncio.sleep(0.1)
    if status is None or status.stage != "rollback window":
        raise CliError(f"demo: {title} never reached its rollback window; see {link}", FAILED)
    console.print(f"v1 takes all traffic; v2 stays warm. {status.canary.waiting_on if status.canary else ''}")
    control = CanaryControl(by=user, reason="demo: switch back")
    began = asyncio.get_running_loop().time()
    result = await operations_client.control(client, SERVICE, "staging", "abort", control,
                                             control_signer(p, user))
    console.print(f"kepler rollback {SERVICE} --env staging: {result}")
    handle = client.get_workflow_handle(started.workflow_id)
    try:
        await handle.result()
    except Exception:  # noqa: BLE001 - a switch-back ends rolled_back
        pass
    status = await operations_client.status(client, started.workflow_id)
    if status.outcome != "rolled_back":
        raise CliError(f"demo: {title} ended {status.outcome}; see {link}", FAILED)
    console.print(f"[green]rolled_back[/green] in {asyncio.get_running_loop().time() - began:.1f}s: "
                  f"{status.error}")
    return link


DEMO_HELP = ("Run the demo against the sandbox: create, release, approve, bad release, failed "
             "migration undone, canary, blue-green and its switch-back.")


def register(app: typer.Typer) -> None:
    @app.command(short_help=first_sentence(DEMO_HELP), help=DEMO_HELP)
    def demo(as_user: Optional[str] = typer.Option(None, "--as"), output: str = OutputOpt) -> None:
        try:
            p = session.platform()
            links = session.run(run_demo(p, session.acting_user(p, as_user)))
        except CliError as e:
            fail(e, output == "json")
        section("done")
        console.print(f"Temporal UI: {p.temporal.ui_url}")
        if p.console.url:
            console.print(f"Console:     {p.console.url}/services (sign in: kepler console enroll)")
        for link in links:
            console.print(link)
