"""Bad input to freezes, through the CLI: each case exits 2 naming the field and the rule,
before anything starts or changes — an unknown environment, a missing or unbounded --for,
no reason, --break-glass without --reason, a kepler.yaml window that never ends, has no
duration bound or a bad cron."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from sandbox.serve import Sandbox
from tests.cli.test_bad_input import kepler, workflow_count, world_state

CASES: list[tuple[list[str], list[str]]] = [
    (["freeze", "--env", "qa", "--for", "2h", "--reason", "x"], ["--env", "unknown environment 'qa'"]),
    (["freeze", "--for", "2h", "--reason", "x"], ["--env", "which environment"]),
    (["freeze", "--env", "prod", "--reason", "x"], ["--for", "how long"]),
    (["freeze", "--env", "prod", "--for", "2h"], ["--reason", "needs a reason"]),
    (["freeze", "--env", "prod", "--for", "2h", "--reason", "   "], ["--reason"]),
    (["freeze", "--env", "prod", "--for", "30s", "--reason", "x"], ["--for", "between 0:01:00 and 7 days"]),
    (["freeze", "--env", "prod", "--for", "8d", "--reason", "x"], ["--for", "7 days"]),
    (["freeze", "--env", "prod", "--for", "3000000d", "--reason", "x"], ["--for", "at most 90 days"]),
    (["freeze", "--env", "prod", "--for", "forever", "--reason", "x"], ["--for", "must be a duration"]),
    (["freeze", "--env", "prod", "--for", "2h", "--reason", "x" * 501], ["--reason", "500"]),
    (["freeze", "--env", "prod\n", "--for", "2h", "--reason", "x"], ["unknown environment"]),
    (["freeze", "list", "--env", "qa"], ["unknown environment 'qa'"]),
    (["unfreeze", "--env", "qa"], ["unknown environment 'qa'"]),
    (["unfreeze", "--env", "prod", "--comment", "x" * 501], ["--comment"]),
    (["release", "shop", "--env", "prod", "--ref", "main", "--break-glass"],
     ["reason", "--break-glass needs a reason"]),
    (["release", "shop", "--env", "prod", "--ref", "main", "--break-glass", "--reason", " "],
     ["--break-glass needs a reason"]),
    (["release", "shop", "--env", "prod", "--ref", "main", "--break-glass", "--after-freeze",
      "--reason", "x"], ["break_glass", "one of the two"]),
    (["canary", "shop", "--env", "prod", "--ref", "v2", "--break-glass"], ["--break-glass needs a reason"]),
    (["release", "freeze", "--env", "prod", "--ref", "main"], ["service", "reserved"]),
]

# kepler.yaml `freeze:` blocks that are refused when read (words expected)
CONFIG_CASES: list[tuple[Any, list[str]]] = [
    ({"prod": {"windows": [{"name": "w", "reason": "r", "cron": "0 18 * * fri"}]}},
     ["freeze.prod.windows.0", "duration: a cron window needs a duration"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "cron": "0 25 * * *", "duration": "1h"}]}},
     ["freeze.prod.windows.0.cron", "hour"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "cron": "0 * * * *", "duration": "2h"}]}},
     ["freeze.prod.windows.0", "would never end"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "cron": "@weekly", "duration": "30d"}]}},
     ["freeze.prod.windows.0", "duration: must be between"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "start": "2026-12-20T00:00:00Z"}]}},
     ["freeze.prod.windows.0", "end: a fixed window needs both start and end"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "start": "2026-12-20T00:00:00Z",
                            "end": "2026-12-19T00:00:00Z"}]}}, ["end: must be after start"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r", "start": "2026-01-01T00:00:00Z",
                            "end": "2026-12-31T00:00:00Z"}]}}, ["at most 90 days"]),
    ({"prod": {"windows": [{"name": "w", "reason": "r"}]}}, ["needs cron and duration, or start and end"]),
    ({"prod": {"windows": [{"name": "w", "cron": "@daily", "duration": "1h"}]}},
     ["freeze.prod.windows.0.reason", "required"]),
    ({"qa": {"windows": []}}, ["freeze.qa: unknown environment 'qa'"]),
]


async def test_bad_freezes_exit_2_naming_the_field_and_change_nothing(
        sandbox: Sandbox, platform_file: Path, dev_env: Any, tmp_path: Path) -> None:
    before, workflows_before = world_state(sandbox), await workflow_count(dev_env.client)
    cases: list[tuple[list[str], list[str], Path]] = [(a, w, platform_file) for a, w in CASES]
    base = yaml.safe_load(platform_file.read_text())
    for i, (block, words) in enumerate(CONFIG_CASES):
        config = tmp_path / f"kepler-{i}.yaml"
        config.write_text(yaml.safe_dump({**base, "freeze": block}, sort_keys=False))
        cases.append((["release", "shop", "--env", "prod", "--ref", "main"], words + [config.name], config))
        cases.append((["freeze", "--env", "prod", "--for", "1h", "--reason", "x"], words, config))
    sem = asyncio.Semaphore(4)

    async def check(args: list[str], words: list[str], config: Path) -> str | None:
        async with sem:
            code, out = await kepler(config, *args)
        if code != 2:
            return f"{args!r}: exit {code}, wanted 2: {out[-300:]}"
        missing = [w for w in words if w not in out]
        return f"{args!r}: message lacks {missing}: {out[-400:]}" if missing else None

    problems = [p for p in await asyncio.gather(*(check(*c) for c in cases)) if p]
    assert not problems, "\n".join(problems)
    assert world_state(sandbox) == before
    assert await workflow_count(dev_env.client) == workflows_before
