"""The freezes page, read over HTTP from the real console: an ad-hoc freeze started with
`kepler freeze` shows as in force now, in today's cell of the calendar with its reason
and hours, and in the list with who froze it; once lifted, the environment is open."""

from __future__ import annotations

import re
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from tests.console.conftest import ConsoleServer, first_live_event
from tests.e2e.test_release import kepler

pytestmark = pytest.mark.e2e
REASON = "chartpg incident <42> & co"  # escaped on the page


def cell(page: str, env: str, index: int) -> str:
    """The calendar cell of `env`'s row for the `index`th day (0: today)."""
    row = re.search(rf'<tr><th scope="row">{env}</th>(.*?)</tr>', page, re.S)
    assert row, page
    return re.findall(r"<td .*?</td>", row.group(1), re.S)[index]


async def test_the_freezes_page_shows_an_adhoc_freeze_now_in_the_calendar_and_the_list(
        console: ConsoleServer, dev_env: Any) -> None:
    cfg = console.platform_file
    code, out, err = await kepler(cfg, "freeze", "--env", "staging", "--for", "2h", "--reason", REASON)
    try:
        assert code == 0, out + err
        async with console.reader() as reader:
            response = await reader.get("/freezes")
            assert response.status_code == 200, response.text
            page = response.text
        escaped = "chartpg incident &lt;42&gt; &amp; co"
        assert REASON not in page and escaped in page
        now = re.search(r'<li><span class="badge frozen">frozen</span> <strong>staging</strong>: '
                        rf"{re.escape(escaped)}\s+\(freeze@staging by carol\),\s+until ", page)
        assert now, page
        assert '<span class="badge open">open</span> <strong>prod</strong>' in page
        today = cell(page, "staging", 0)
        assert 'class="frozen today"' in today and escaped in today
        assert re.search(r"<small>(from \d\d:\d\d|\d\d:\d\d–\d\d:\d\d)</small>", today), today
        assert 'class="open today"' in cell(page, "prod", 0)
        assert len(re.findall(r'<th scope="col"', page)) == 1 + 14  # environment, then 14 days
        listed = re.search(r"<tr><td>staging</td><td>ad-hoc</td><td>freeze@staging</td>"
                           rf"<td>{re.escape(escaped)}</td>.*?<td>yes</td>.*?<td>carol</td></tr>",
                           page, re.S)
        assert listed, page
        async with console.reader() as reader:
            assert 'class="frozen today"' in cell(await first_live_event(reader, "/freezes"),
                                                  "staging", 0)
        code, out, err = await kepler(cfg, "unfreeze", "--env", "staging")
        assert code == 0, out + err
        async with console.reader() as reader:
            page = (await reader.get("/freezes")).text
        assert '<span class="badge open">open</span> <strong>staging</strong>' in page
        assert "chartpg incident" not in page
    finally:  # other tests share this server: no freeze outlives this one
        handle = dev_env.client.get_workflow_handle("freeze@staging")
        try:
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test over")
        except RPCError:  # it never started
            pass
