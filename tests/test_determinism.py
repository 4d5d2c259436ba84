"""Workflow code stays deterministic: what the workflow sandbox refuses at run time, read from
the source of workflows/, so the production worker (which runs unsandboxed: worker.py) can
never meet it. The workflow tests and the replay of every recorded history run in the full
sandbox on top of this."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# modules whose use in a workflow is I/O, a clock or chance
FORBIDDEN_MODULES = {"time", "random", "uuid", "os", "socket", "subprocess", "threading",
                     "requests", "httpx", "urllib", "secrets", "shutil", "pathlib", "gitlab",
                     "jenkins", "kubernetes", "docker", "sqlite3", "multiprocessing"}
# calls that read the wall clock or the environment whatever module they come from
FORBIDDEN_CALLS = {"now", "utcnow", "today", "fromtimestamp", "open", "input", "getenv"}
ALLOWED_CALL_OWNERS = {"workflow"}  # workflow.now() is the replayed clock


def problems(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{name}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name) else ""
            if called in FORBIDDEN_CALLS and owner not in ALLOWED_CALL_OWNERS:
                found.append(f"{name}:{node.lineno}: {owner + '.' if owner else ''}{called}()")
    return found


def test_workflow_code_reads_no_clock_chance_or_world() -> None:
    found = [p for path in sorted((ROOT / "workflows").rglob("*.py"))
             for p in problems(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "workflows/ must use workflow.now(), workflow.random(), activities:\n" \
        + "\n".join(found)


@pytest.mark.parametrize("line", [
    "import time", "from random import choice", "import os.path",
    "x = datetime.now()", "x = datetime.datetime.utcnow()", "open('f')", "import httpx",
])
def test_each_kind_of_violation_is_caught(line: str) -> None:
    assert problems(line, "w.py"), line


def test_the_replayed_clock_is_allowed() -> None:
    assert problems("x = workflow.now()\ny = workflow.random().random()", "w.py") == []
