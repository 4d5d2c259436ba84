"""The services page, read over HTTP from the real console: every service with its team,
owners and environments; filtered by team; readable without JavaScript; signed-out readers
are sent to sign in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.console.conftest import ConsoleServer
from tests.e2e.test_release import kepler

pytestmark = pytest.mark.e2e


async def test_the_services_page_lists_services_with_team_owners_and_environments(
        console: ConsoleServer, tmp_path: Path) -> None:
    for name, team in (("atlas1", "maps"), ("borealis1", "weather")):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "team": team, "replicas": 1, "owners": ["alice"]}))
        code, out, err = await kepler(console.platform_file, "service", "create", "-f",
                                      str(tmp_path / f"{name}.yaml"), "--watch")
        assert code == 0, out + err
    async with console.reader() as reader:
        page = await reader.get("/services")
        assert page.status_code == 200
        assert "atlas1" in page.text and "borealis1" in page.text and "maps" in page.text
        assert "staging → prod" in page.text and "alice" in page.text
        assert "<script" in page.text and "default-src 'none'" in page.headers["content-security-policy"]
        filtered = await reader.get("/services", params={"team": "weather"})
        assert "borealis1" in filtered.text and "atlas1" not in filtered.text
    async with console.reader() as reader:
        reader.cookies.clear()
        anonymous = await reader.get("/services")
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
