"""The DORA page, read over HTTP from the real console after real releases (the CLI, the
worker, the sandbox): a success, a crash rolled back, a fix — the week's bars and the
totals show two deploys, one failure of three and one restore, for the team asked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sandbox.serve import Sandbox
from tests.console.conftest import ConsoleServer, first_live_event
from tests.e2e.test_release import gitlab_client, kepler

pytestmark = pytest.mark.e2e
SERVICE, TEAM = "dorachartpg", "chartpg-dora"


def bars(page: str, title: str) -> list[str]:
    """A bar chart's values, oldest week first, as its aria-label says them."""
    found = re.search(rf'aria-label="{re.escape(title)}: ([^"]*)"', page)
    assert found, f"no chart {title!r}"
    return [part.rsplit(": ", 1)[1] for part in found.group(1).split("; ")]


async def test_the_dora_page_charts_deploys_failures_and_restores_by_week_for_a_team(
        console: ConsoleServer, sandbox: Sandbox, tmp_path: Path) -> None:
    cfg = console.platform_file
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": SERVICE, "team": TEAM, "replicas": 1}))
    assert (await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"))[0] == 0
    project = gitlab_client(sandbox).projects.get(f"demo/{SERVICE}")

    async def release(expected: int) -> None:
        code, out, err = await kepler(cfg, "release", SERVICE, "--env", "staging", "--ref", "main",
                                      "--watch")
        assert code == expected, out + err

    await release(0)
    project.commits.create({"branch": "main", "commit_message": "crashes", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "crash: true\n"}]})
    await release(1)  # rolled back: a change failure
    project.commits.create({"branch": "main", "commit_message": "fixed", "actions": [
        {"action": "delete", "file_path": "kepler-sandbox.yaml"}]})
    await release(0)  # restored

    async with console.reader() as reader:
        response = await reader.get("/dora", params={"team": TEAM})
        assert response.status_code == 200, response.text
        page = response.text
        assert f'<option value="{TEAM}" selected>' in page and f"team {TEAM}" in page
        staging = re.search(r'<tr><th scope="row">staging</th>(.*?)</tr>', page, re.S)
        assert staging, page
        assert "(2 deploys)" in staging.group(1) and "33% (1 of 3)" in staging.group(1)
        assert "(1 restored)" in staging.group(1) and "(2 changes)" in staging.group(1)
        prod = re.search(r'<tr><th scope="row">prod</th>(.*?)</tr>', page, re.S)
        assert prod and "(0 deploys)" in prod.group(1)
        # by week, oldest first: everything happened this week
        assert bars(page, "staging: deploys a week") == ["0"] * 7 + ["2"]
        assert bars(page, "staging: change failure rate a week") == ["no data"] * 7 + ["33%"]
        restore = bars(page, "staging: median time to restore a week")
        assert restore[:7] == ["no data"] * 7 and re.fullmatch(r"(\d+m )?\d+s", restore[7])
        lead = bars(page, "staging: median lead time a week")
        assert lead[:7] == ["no data"] * 7 and lead[7] != "no data"
        assert bars(page, "prod: deploys a week") == ["0"] * 8

        live = await first_live_event(reader, f"/dora?team={TEAM}")  # the same, pushed
        assert bars(live, "staging: deploys a week") == ["0"] * 7 + ["2"]

        other = (await reader.get("/dora", params={"team": "nobody-chartpg"})).text
        assert bars(other, "staging: deploys a week") == ["0"] * 8
        bad = await reader.get("/dora", params={"team": "Bad_Team"})
        assert bad.status_code == 400 and "team" in bad.text
