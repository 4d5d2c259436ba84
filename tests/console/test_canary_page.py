"""The canary page, read over HTTP from the real console while a real canary runs (the CLI,
the worker, the sandbox's Prometheus stand-in): its weight over time and each check's
values against its thresholds as charts, the controls valid in its state, and a clear
note (with the last canary's outcome) when none runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Callable

import httpx
import pytest
import yaml

from tests.console.conftest import ConsoleServer, first_live_event
from tests.e2e.test_release import kepler

pytestmark = pytest.mark.e2e
SERVICE = "canarychartpg"
PAGE = f"/services/{SERVICE}/staging/canary"


def actions(html: str) -> list[str]:
    return re.findall(r'data-action="(\w+)"', html)


async def page_until(reader: httpx.AsyncClient, check: Callable[[str], bool], what: str,
                     timeout: float = 20) -> str:
    """The canary page once `check` holds for it (polled: the console reads on each GET)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        page = (await reader.get(PAGE)).text
        if check(page):
            return page
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the canary page never showed {what}:\n{page}")
        await asyncio.sleep(0.2)



async def test_the_canary_page_charts_weights_and_checks_and_offers_the_valid_controls(
        console: ConsoleServer, tmp_path: Path) -> None:
    cfg = console.platform_file
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": SERVICE, "team": "charts",
                                                         "replicas": 1}))
    assert (await kepler(cfg, "service", "create", "-f", str(tmp_path / "spec.yaml"), "--watch"))[0] == 0
    async with console.reader() as reader:
        page = await reader.get(PAGE)
        assert page.status_code == 200, page.text
        assert f"No canary is running for {SERVICE} in staging" in page.text
        assert "No canary has run" in page.text and not actions(page.text)
        assert (await reader.get(f"/services/{SERVICE}/qa/canary")).status_code == 404

        assert (await kepler(cfg, "release", SERVICE, "--env", "staging", "--ref", "main",
                             "--watch"))[0] == 0
        code, out, err = await kepler(cfg, "canary", SERVICE, "--env", "staging", "--ref", "main",
                                      "--steps", "20,50,80", "--interval", "10s")
        assert code == 0, out + err
        try:
            # the stand-in's metrics passed a first round at 20 %: the canary moved to 50 %
            page = await page_until(reader, lambda p: "50% · step 2 of 3" in p, "50 %", 40)
            assert "Running canary main@" in page and "analysing" in page
            assert "<strong>50%</strong>" in page
            weight = re.search(r'<svg class="chart line"[^>]*aria-label="Traffic to the canary: '
                               r'weight: (\d+) values from 0% to 50%', page)
            assert weight and int(weight.group(1)) >= 3, page  # 0, then 20, then 50
            # every check: its values each round and a dashed line at its threshold
            assert re.search(r"Analysis rounds: [1-9]", page)
            for check, threshold in (("request-success-rate", "min 99"),
                                     ("request-duration", "max 500")):
                assert f"<figcaption>{check}, threshold" in page
                assert re.search(rf'aria-label="{check} each analysis round: {check}: [1-9]\d* '
                                 rf"values from [\d.]+ to [\d.]+, last [\d.]+ at .*; threshold "
                                 rf'{threshold}"', page), page
                assert f'fill="#b3261e">{threshold}</text>' in page
            assert f'data-service="{SERVICE}" data-env="staging"' in page
            assert '<input name="comment"' in page
            assert actions(page) == ["pause", "promote", "abort"]
            live = await first_live_event(reader, PAGE)
            assert "Traffic to the canary" in live and actions(live) == ["pause", "promote", "abort"]

            assert (await kepler(cfg, "pause", SERVICE, "--env", "staging"))[0] == 0
            page = await page_until(reader, lambda p: "paused by carol" in p, "the pause")
            assert actions(page) == ["resume", "promote", "abort"]
        finally:
            await kepler(cfg, "abort", SERVICE, "--env", "staging", "--reason", "page seen")
        page = await page_until(reader, lambda p: "Last canary: main@" in p, "the last canary")
        assert f"No canary is running for {SERVICE} in staging" in page
        assert ", aborted</h2>" in page
        assert "aborted by carol: page seen" in page and not actions(page)
        assert "Traffic to the canary" in page  # the last canary's charts
