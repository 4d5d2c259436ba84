"""The house's layering rule, checked on every import statement of the runtime packages:
workflows/ -> kepler/; activities/ -> kepler/; starter/ -> kepler/ (+ the Temporal
client); kepler/ imports none of them; sandbox/ stands alone. Also: modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kepler", "workflows", "activities", "starter", "sandbox")
# what each package may import of the others (itself always)
ALLOWED = {
    "kepler": set(),
    "workflows": {"kepler", "activities"},  # activities only as names of steps (see below)
    "activities": {"kepler"},
    "starter": {"kepler"},
    "sandbox": set(),
}
MAX_LINES = {"workflows": 400, "activities": 400, "kepler": 400, "starter": 400, "sandbox": 450}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}"
             for path in modules(package) for line, target in imports_of(path)
             if target in PACKAGES and target != package and target not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_workflows_use_activities_only_as_step_names() -> None:
    """A workflow names an activity class's methods as its steps (Temporal needs the
    definitions); it never calls activity code: only `from activities.x import XActivities`
    is imported."""
    wrong = []
    for path in modules("workflows"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("activities"):
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
                          for alias in node.names
                          if not alias.name.endswith("Activities")]
    assert not wrong, "\n".join(wrong)


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from starter import cli\n")
    assert imports_of(bad) == [(2, "starter")]


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package: str) -> None:
    # Generated code (e.g. sandbox/kubernetes/protobuf/generated/, protoc's output) is
    # rewritten by its generator, not by hand: size is not the reader's problem there.
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p in modules(package)
           if "generated" not in p.relative_to(ROOT).parts[:-1]
           and (n := len(p.read_text().splitlines())) > MAX_LINES[package]]
    assert not big, f"over {MAX_LINES[package]} lines: " + ", ".join(big)
