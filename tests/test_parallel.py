"""`make test` runs on pytest-xdist workers (tests/parallel.py): what must start once per run
starts on one worker. A small suite of the same shape, run with three workers, records which
worker started what."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = '''
import os
from pathlib import Path

import pytest

from tests import parallel

OUT = Path(os.environ["RECORD"])


def pytest_configure(config):
    config.pluginmanager.register(parallel, "kepler-parallel")


def record(what):
    with (OUT / what).open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.fixture(scope="session")
def real_cluster():
    record("cluster")


@pytest.fixture(scope="session")
def real_world(real_cluster):
    record("world")


@pytest.fixture(params=["standin", "real"])
def backend(request):
    if request.param == "real":
        request.getfixturevalue("real_world")
    return request.param
'''

TESTS = {
    "test_cluster.py": '''
from conftest import record

def test_a(real_cluster): record("cluster-tests")
def test_b(real_cluster): record("cluster-tests")
''',
    "test_backends.py": '''
from conftest import record

def test_one(backend): record(backend + "-tests")
def test_two(backend): record(backend + "-tests")
def test_three(backend): record(backend + "-tests")
''',
    "test_module_fixture.py": '''
import pytest
from conftest import record

@pytest.fixture(scope="module")
def engine():
    record("engine")

def test_1(engine): record("engine-tests")
def test_2(engine): record("engine-tests")
def test_3(engine): record("engine-tests")
''',
    "test_free.py": "".join(f"def test_{i}(): pass\n" for i in range(12)),
}


def test_the_control_plane_and_a_module_fixture_start_on_one_worker(tmp_path: Path) -> None:
    suite, record = tmp_path / "suite", tmp_path / "record"
    suite.mkdir()
    record.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    for name, text in TESTS.items():
        (suite / name).write_text(text)
    env = {k: v for k, v in os.environ.items()  # not the outer run's options, groups or worker
           if not k.startswith(("PYTEST_", "KEPLER_XDIST"))}
    env.update({"RECORD": str(record),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-n", "3", "--dist", "loadgroup", str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "23 passed" in done.stdout, done.stdout

    def workers(what: str) -> list[str]:
        return (record / what).read_text().split()

    assert len(workers("cluster")) == 1 and len(workers("world")) == 1
    assert len(workers("engine")) == 1
    # every test of the control plane ran where it started; the module's tests where theirs did
    assert set(workers("cluster-tests") + workers("real-tests")) == set(workers("cluster"))
    assert len(workers("real-tests")) == 3 and len(workers("standin-tests")) == 3
    assert set(workers("engine-tests")) == set(workers("engine"))
