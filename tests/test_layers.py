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


# --- the one lifecycle and the registry's contracts ---------------------------------------------

RUNTIME = ("kepler", "workflows", "activities", "starter", "bench")
REGISTRY = ROOT / "kepler" / "contracts.py"
# calls that name a message or a workflow type by their first argument
NAMING_CALLS = {"query", "execute_update", "start_update", "signal", "start_workflow",
                "start_child_workflow", "execute_child_workflow", "get_external_workflow_handle"}
HANDLER_DECORATORS = {"query", "update", "signal", "defn"}


def _runtime_files() -> list[Path]:
    return [p for package in RUNTIME for p in modules(package)] + [ROOT / "worker.py"]


def _names_by_string(path: Path, forbidden: set[str], types: set[str]) -> list[str]:
    """Where `path` names a message or workflow type (`forbidden`) with a string literal,
    or compares with or keys by a workflow type (`types`; a verdict such as "approve" is
    a word of a signed statement, not the update's name)."""
    found = []
    shown = path.relative_to(ROOT) if ROOT in path.parents else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            if attr in NAMING_CALLS and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in forbidden:
                found.append(f"{where} {attr}({node.args[0].value!r})")
            if attr in HANDLER_DECORATORS and isinstance(node.func.value, ast.Name) \
                    and node.func.value.id == "workflow":
                found += [f"{where} {attr}(name={k.value.value!r})" for k in node.keywords
                          if k.arg == "name" and isinstance(k.value, ast.Constant)
                          and k.value.value in forbidden]
            found += [f"{where} {k.arg}={k.value.value!r}" for k in node.keywords
                      if k.arg == "start_signal" and isinstance(k.value, ast.Constant)]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:  # a bare @workflow.query takes the method's name
                if isinstance(d, ast.Attribute) and d.attr in {"query", "update", "signal"} \
                        and isinstance(d.value, ast.Name) and d.value.id == "workflow":
                    found.append(f"{where} @workflow.{d.attr} without a registry name")
        if isinstance(node, ast.Compare):
            found += [f"{where} compares with {c.value!r}" for c in [node.left, *node.comparators]
                      if isinstance(c, ast.Constant) and c.value in types]
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value in types
                                              for k in node.keys):
            found.append(f"{where} keys a dict by a workflow type or message name")
    return found


def _registered_names() -> tuple[set[str], set[str]]:
    """(every workflow type and message name, the workflow types)."""
    from kepler.contracts import OPERATIONS

    workflow_types = {o.workflow for o in OPERATIONS}
    return workflow_types | {name for o in OPERATIONS for name in o.handlers}, workflow_types


def test_messages_and_workflow_types_are_named_by_the_registry_only() -> None:
    """No update, query or signal name, and no workflow type, as a string outside
    kepler/contracts.py: a rename there renames it everywhere, or fails to import."""
    forbidden, types = _registered_names()
    found = [hit for path in _runtime_files() if path != REGISTRY
             for hit in _names_by_string(path, forbidden, types)]
    assert not found, "\n".join(found)


def test_a_message_named_by_a_string_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('async def f(h):\n    await h.execute_update("abort", 1)\n'
                   'class W:\n    @workflow.query\n    def status(self): ...\n'
                   'ok = desc.workflow_type == "Canary"\n')
    found = _names_by_string(bad, {"abort", "Canary"}, {"Canary"})
    assert len(found) == 3, found


def calls_operate(cls: type, method: str = "run", depth: int = 0) -> bool:
    """Whether `cls.method` calls `self.operate`, itself or through its own methods."""
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(getattr(cls, method)))
    called = {n.func.attr for n in ast.walk(ast.parse(source))
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and isinstance(n.func.value, ast.Name) and n.func.value.id == "self"}
    return "operate" in called or (depth < 2 and any(
        calls_operate(cls, m, depth + 1) for m in called if hasattr(cls, m)
        and inspect.isfunction(getattr(cls, m))))


def test_a_run_outside_the_lifecycle_is_caught() -> None:
    class Lifecycle:
        async def run(self) -> None:
            await self.change()

        async def change(self) -> None:
            await self.operate()  # type: ignore[attr-defined]

    class Outside:
        async def run(self) -> None:
            await self.runbook()

        async def runbook(self) -> None:
            pass

    assert calls_operate(Lifecycle) and not calls_operate(Outside)


def test_every_workflow_runs_through_the_lifecycle() -> None:
    """Every registered workflow is a KeplerWorkflow whose run goes through `operate`
    (directly or through one of its own methods): one way to begin and end for all."""
    import workflows
    from kepler.contracts import OPERATIONS
    from workflows.base import KeplerWorkflow

    wrong = [o.workflow for o in OPERATIONS
             if not issubclass(cls := getattr(workflows, o.workflow), KeplerWorkflow)
             or not calls_operate(cls, "run")]
    assert not wrong, f"outside the lifecycle: {wrong}"


def test_each_workflow_takes_exactly_its_contracts_messages() -> None:
    """The registry entry says what a workflow takes; only gated operations take approve
    and reject (the approval gate is a mixin they choose)."""
    from temporalio.workflow import _Definition

    import workflows
    from kepler.contracts import OPERATIONS
    from workflows.common.approval import ApprovalGate

    for o in OPERATIONS:
        cls = getattr(workflows, o.workflow)
        defn = _Definition.must_from_class(cls)
        declared = {*defn.queries, *defn.updates, *defn.signals}
        assert declared == o.handlers, (o.workflow, sorted(declared ^ o.handlers))
        assert issubclass(cls, ApprovalGate) == o.gated, o.workflow
        assert defn.name == o.workflow


def test_each_workflow_reports_its_contracts_result() -> None:
    """`KeplerWorkflow[Report]`: the typed runner's report is the contract's result type."""
    import typing

    import workflows
    from kepler.contracts import OPERATIONS
    from workflows.base import KeplerWorkflow

    def report_of(cls: type) -> object:
        for klass in cls.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                if typing.get_origin(base) is KeplerWorkflow:
                    return typing.get_args(base)[0]
        return None

    wrong = {o.workflow: report_of(getattr(workflows, o.workflow)) for o in OPERATIONS
             if report_of(getattr(workflows, o.workflow)) is not o.result}
    assert not wrong, wrong
