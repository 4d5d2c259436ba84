"""Bad input to `kepler train|scale|resources|schedule` is refused with exit 2 and a
message naming the field, before anything is started (no Temporal needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEPLER = str(Path(sys.executable).parent / "kepler")


def kepler(*args: str) -> tuple[int, str]:
    proc = subprocess.run([KEPLER, *args], capture_output=True, text=True, timeout=60, env={
        **os.environ, "KEPLER_CONFIG": str(ROOT / "kepler.yaml"), "KEPLER_USER": "carol", "COLUMNS": "200"})
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("members, message", [
    ("[{service: a, ref: main, depends_on: [b]}, {service: b, ref: main, depends_on: [a]}]",
     "members: dependency cycle: a -> b -> a"),
    ("[{service: a, ref: main, depends_on: [zzz]}]", "members.a.depends_on: zzz is not a member"),
    ("[{service: A!, ref: main}]", "members.0.service: must be a DNS-1035 label"),
    ("[]", "members: List should have at least 1 item"),
])
def test_train_file_errors(tmp_path: Path, members: str, message: str) -> None:
    (tmp_path / "t.yaml").write_text(f"name: payday\nenv: prod\nmembers: {members}\n")
    code, err = kepler("train", "-f", str(tmp_path / "t.yaml"))
    assert code == 2 and message in " ".join(err.split()), err


@pytest.mark.parametrize("args, message", [
    (["train", "-f", "/nonexistent.yaml"], "/nonexistent.yaml"),
    (["scale", "shop", "--env", "prod", "--replicas", "11"], "--replicas: 11 is over prod's maximum of 10"),
    (["scale", "shop", "--env", "prod"], "--replicas: give a number of replicas, or --reset"),
    (["scale", "shop", "--env", "qa", "--replicas", "1"], "--env: unknown environment 'qa'"),
    (["resources", "shop", "--env", "prod", "--cpu", "5"], "--cpu: 5 is over prod's maximum of 4"),
    (["scale", "shop", "--env", "prod", "--replicas", "0"],
     "--replicas: 0 is under prod's minimum of 1 (environments.prod.bounds.min_replicas"),
    (["resources", "shop", "--env", "prod", "--memory", "1Mi"],
     "--memory: 1Mi is under prod's minimum of 32Mi (environments.prod.bounds.min_memory"),
    (["resources", "shop", "--env", "prod", "--cpu", "1m"], "--cpu: 1m is under prod's minimum of 10m"),
    (["resources", "shop", "--env", "prod", "--memory", "lots"], "memory: must be a Kubernetes quantity"),
    (["resources", "shop", "--env", "prod", "--cpu", "2", "--cpu-limit", "1"],
     "--cpu: the request 2 is over --cpu-limit 1"),
    (["schedule", "release", "shop", "--env", "prod", "--ref", "main", "--cron", "0 2 *"],
     "--cron: '0 2 *' must have 5 fields"),
    (["schedule", "delete", "Shop", "--env", "prod"], "service: must be a DNS-1035 label"),
])
def test_bad_input_exit_2(args: list[str], message: str) -> None:
    code, err = kepler(*args)
    assert code == 2 and message in " ".join(err.split()), err
