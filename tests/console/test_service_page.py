"""The service page, read over HTTP from the real console: the promotion path as columns
with what is live in each environment (as `kepler status` and `kepler history` say), the
running operation's steps with its approval link, the history's outcomes, the verified
audit and a log tail; the live block as server-sent events; an unknown service is a 404,
a bad name a 400 naming the rule; an environment whose cluster is down is a note."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from kepler.clients.temporal import LazyClient
from kepler.settings import load_platform
from starter.console.app import Console, Problem
from starter.console.auth import Tokens, Viewer
from starter.console.views import service as service_page
from tests.console.conftest import ConsoleServer, first_live_event
from tests.e2e.test_release import kepler, wait_for_outcome, wait_for_stage

pytestmark = pytest.mark.e2e
SERVICE = "svcpage"


def column(page: str, env: str) -> str:
    found = re.search(rf'<article class="card env" data-env="{env}">(.*?)</article>', page, re.S)
    assert found, f"no column for {env}"
    return found.group(1)


def field(block: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">(.*?)</dd>', block, re.S)
    assert found, f"no {name}"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def section(page: str, name: str) -> str:
    found = re.search(rf'<section class="{name}"(.*?)</section>', page, re.S)
    assert found, f"no {name} section"
    return found.group(1)



@pytest.fixture(scope="module")
async def released(console: ConsoleServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """SERVICE created and released to staging with the CLI: its report, and its promotion
    path as `kepler status SERVICE` shows it."""
    spec = tmp_path_factory.mktemp("svcpage") / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": SERVICE, "team": "pages", "replicas": 1,
                                    "owners": ["alice"]}))
    code, out, err = await kepler(console.platform_file, "service", "create", "-f", str(spec),
                                  "--watch")
    assert code == 0, out + err
    code, out, err = await kepler(console.platform_file, "release", SERVICE, "--env", "staging",
                                  "--ref", "main", "--watch", "-o", "json")
    assert code == 0, out + err
    path = json.loads((await kepler(console.platform_file, "status", SERVICE, "-o", "json"))[1])
    return {"report": json.loads(out)["report"], "path": path["path"]}


async def test_the_service_page_shows_the_path_the_running_operation_history_audit_and_logs(
        console: ConsoleServer, released: dict) -> None:
    report, path = released["report"], released["path"]
    # prod takes what staging runs (soak 0s here) and needs an approver: it waits for one
    code, out, err = await kepler(console.platform_file, "release", SERVICE, "--env", "prod",
                                  "--from", "staging")
    assert code == 0, out + err
    await wait_for_stage(console.platform_file, SERVICE, "prod", "awaiting approval")
    history = json.loads((await kepler(console.platform_file, "history", SERVICE, "-o", "json"))[1])

    async with console.reader() as reader:
        page = (await reader.get(f"/services/{SERVICE}")).text
        assert "<h1>svcpage</h1>" in page
        envs = re.findall(r'<article class="card env" data-env="([a-z0-9-]+)">', page)
        assert envs == [row["env"] for row in path] == ["staging", "prod"]
        assert "staging → prod" in page
        staging, live = column(page, "staging"), path[0]["live"]
        assert field(staging, "version") == live["version"] and live["commit"] == report["commit"]
        assert field(staging, "commit") == report["commit"]
        assert field(staging, "image") == report["image"] and "@sha256:" in report["image"]
        assert field(staging, "health") == "healthy" and "UTC" in field(staging, "since")
        assert field(staging, "replicas").startswith("1/1 ready") and "rolled out" in staging
        assert "cpu 100m" in field(staging, "resources")
        assert "soaked (0s): may be promoted to prod" in html.unescape(staging)
        assert "No freeze in force." in staging
        prod = column(page, "prod")
        assert "← staging, soak 0s" in html.unescape(prod)
        assert field(prod, "version") == "-" and field(prod, "image") == "-"
        assert field(prod, "health") == "nothing released here yet" and "awaiting approval" in prod

        running = section(page, "running-ops")
        assert "release svcpage@prod" in running and "awaiting approval" in running
        assert f'href="/services/{SERVICE}/prod/approval"' in running
        assert "policy" in running or "approval" in running  # its steps, as `kepler status`

        shown = section(page, "history")
        for row in history:  # every operation, with its outcome, newest first
            assert f'data-workflow="{row["workflow_id"]}"' in shown
        outcomes = re.findall(r'<td class="outcome outcome-([a-z_]*)">', shown)
        assert outcomes == [r["outcome"] for r in history] == ["running", "succeeded", "succeeded"]

        audit = section(page, "audit")
        requesters = re.findall(r'<td class="requester"><span class="ok" data-verified="true">'
                                r'(\w+) ✓ verified', audit)
        assert requesters == ["carol", "carol", "carol"]
        assert report["image"].rsplit("@", 1)[-1] in audit and report["commit"][:12] in audit

        logs = section(page, "logs")
        staging_logs = re.search(r'data-env="staging">(.*?)</article>', logs, re.S)
        assert staging_logs and "<pre>" in staging_logs.group(1)
        assert "starting (image sha256:" in staging_logs.group(1)
        assert "no started pods" in re.search(r'data-env="prod">(.*?)</article>', logs, re.S).group(1)

        live = await first_live_event(reader, f"/services/{SERVICE}")
        assert 'data-env="staging"' in live and report["commit"] in live and "<html" not in live

        missing = await reader.get("/services/nosuchsvcpage")
        assert missing.status_code == 404 and "no service &#39;nosuchsvcpage&#39;" in missing.text
        bad = await reader.get("/services/Bad_Name")
        assert bad.status_code == 400 and "DNS-1035" in bad.text

    code, out, err = await kepler(console.platform_file, "reject", SERVICE, "--env", "prod",
                                  user="alice")
    assert code == 0, out + err
    assert (await wait_for_outcome(console.platform_file, SERVICE, "prod"))["outcome"] == "rejected"
    async with console.reader() as reader:
        page = (await reader.get(f"/services/{SERVICE}")).text
        assert f"Nothing is running on {SERVICE}." in page
        decided = re.search(r'reject <span class="ok" data-verified="true">(\w+) ✓ verified',
                            section(page, "audit"))
        assert decided and decided.group(1) == "alice"


async def test_an_environment_whose_cluster_is_down_is_a_note(
        console: ConsoleServer, released: dict, dev_env: object) -> None:
    data = yaml.safe_load(console.platform_file.read_text())
    data["environments"]["prod"]["cluster"]["server"] = "http://127.0.0.1:1"
    path = console.platform_file.parent / "down.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    down = Console(platform=load_platform(path), client=LazyClient(None, dev_env.client),  # type: ignore[attr-defined]
                   tokens=Tokens(b"x"))
    viewer = Viewer(person="dev", via="sso")
    with pytest.raises(Problem) as refused:
        await service_page.data(down, viewer, {"service": "freeze"}, {})
    assert refused.value.status == 400 and "reserved" in str(refused.value)
    shown = await service_page.data(down, viewer, {"service": SERVICE}, {})
    page = down.render_live("service.html", {"viewer": viewer, "csrf": "", "request_path": "/",
                                             **shown})
    prod = column(page, "prod")
    assert "The cluster of prod cannot be read" in prod and "cannot read svcpage-prod/svcpage" in prod
    assert field(prod, "health") == "unknown"
    assert field(column(page, "staging"), "health") == "healthy"
    logs = section(page, "logs")
    assert "no logs: the cluster of prod cannot be read" in logs and "<pre>" in logs
