"""Parallel runs: `make test` spreads the suite over pytest-xdist workers (-n $(TEST_WORKERS)
--dist loadgroup). Each worker has its own session fixtures (a Temporal dev server, a sandbox,
a Kepler home made by tests/conftest.py's pytest_configure), all on free loopback ports and in
temporary folders. What must start only once per run is pinned to one worker by an
`xdist_group` mark, set here as each item is collected:

- the real control planes (`real_cluster`, `sandbox_cluster`, and `backend`'s "real", which
  is `real_world`): one worker runs every test that uses them;
- the real Temporal servers (`temporal_cluster`, `server_home`: each test starts its own
  server and PostgreSQL): one worker runs them one after the other, so that four of them do
  not load the machine at once;
- a module's module-scoped fixtures (a dockerd, a Prometheus, a sandbox of its own): every
  test of the module that uses one runs on the worker that started it.

xdist's own loadgroup passes a test's group to the controller as a suffix of its node id,
which pytest 9.2's structured node ids silently drop (pytest-dev/pytest-xdist#1386): every
test was scheduled alone and each worker started its own control plane. So the workers write
the groups to a folder the controller made (KEPLER_XDIST_GROUPS), and the controller's
scheduler, xdist's loadscope over those groups, reads them once collection is complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

GROUPS_ENV = "KEPLER_XDIST_GROUPS"
REAL_CLUSTER_GROUP = "real-k8s"
REAL_CLUSTER_FIXTURES = frozenset({"real_cluster", "sandbox_cluster", "real_world"})
REAL_TEMPORAL_GROUP = "real-temporal"
REAL_TEMPORAL_FIXTURES = frozenset({"temporal_cluster", "server_home"})


def xdist_group_of(item: pytest.Item) -> str | None:
    """The group `item` must run in, or None when any worker may run it."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if names & REAL_CLUSTER_FIXTURES or (callspec is not None
                                         and callspec.params.get("backend") == "real"):
        return REAL_CLUSTER_GROUP  # tests/realk8s/conftest.py: `backend` "real" is real_world
    if names & REAL_TEMPORAL_FIXTURES:
        return REAL_TEMPORAL_GROUP
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d[-1].scope in ("module", "class", "package") for d in defs if d):
        return item.nodeid.split("::")[0]
    return None


def marked_group(item: pytest.Item) -> str | None:
    """The item's xdist_group mark, as xdist reads it."""
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    return "_".join(names) or None


def pytest_itemcollected(item: pytest.Item) -> None:
    group = xdist_group_of(item)
    if group is not None and marked_group(item) is None:
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a loadgroup run makes the folder its workers (started after this,
    inheriting the environment) write their groups to."""
    if hasattr(config, "workerinput") or config.getoption("dist", "no") != "loadgroup":
        return
    folder = tempfile.mkdtemp(prefix="kepler-xdist-groups-")
    os.environ[GROUPS_ENV] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A worker: the groups of what it collected (last, so with the ids it sends)."""
    folder = os.environ.get(GROUPS_ENV)
    if not folder or not hasattr(config, "workerinput"):
        return
    groups = {item.nodeid: group for item in items if (group := marked_group(item))}
    path = Path(folder) / f"{config.workerinput['workerid']}.json"  # type: ignore[attr-defined]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


class GroupScheduling:
    """Made lazily: xdist's scheduler classes are imported only when xdist schedules."""

    def __new__(cls, config: pytest.Config, log: Any, folder: Path) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class Scheduling(LoadScopeScheduling):
            """xdist's loadscope whose scope is a test's group, or the test alone."""

            groups: dict[str, str] | None = None

            def _split_scope(self, nodeid: str) -> str:
                if self.groups is None:
                    files = sorted(folder.glob("*.json"))
                    if not files:  # schedule() runs once every worker sent its collection
                        raise RuntimeError(f"no worker wrote its xdist groups to {folder}")
                    self.groups = {}
                    for f in files:
                        self.groups.update(json.loads(f.read_text()))
                group = self.groups.get(nodeid)
                return f"group {group}" if group else nodeid

        return Scheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    folder = os.environ.get(GROUPS_ENV)
    if config.getoption("dist", "no") != "loadgroup" or not folder:
        return None
    return GroupScheduling(config, log, Path(folder))
