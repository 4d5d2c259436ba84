"""Bad input, through the CLI, the chat-ops endpoint and the client API: each case is refused
with a clear message naming the field (CLI exit 2), and nothing in the world changes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError

from kepler.models import ApprovalDecision, CanaryRequest, CreateServiceRequest, ReleaseRequest, RollbackRequest
from kepler.spec import ServiceSpec
from kepler.settings import Secrets, load_platform
from sandbox.serve import Sandbox
from sandbox.world import STANDINS
from starter import chatops

BIN = Path(sys.executable).parent
OK_SPEC = {"name": "shop", "team": "payments"}

# (args, words expected in the error): the CLI must exit 2 and name the problem
CLI_CASES: list[tuple[list[str], list[str]]] = [
    (["release", "Bad_Name", "--env", "staging", "--ref", "main"], ["service", "DNS-1035"]),
    (["release", "-lead", "--env", "staging", "--ref", "main"], []),
    (["release", "a" * 41, "--env", "staging", "--ref", "main"], ["40 characters"]),
    (["release", "ѕhop", "--env", "staging", "--ref", "main"], ["DNS-1035"]),  # Cyrillic s
    (["release", "shop;rm", "--env", "staging", "--ref", "main"], ["DNS-1035"]),
    (["release", "../etc", "--env", "staging", "--ref", "main"], ["DNS-1035"]),
    (["release", "shop", "--env", "qa", "--ref", "main"], ["unknown environment 'qa'"]),
    (["release", "shop", "--env", "PROD", "--ref", "main"], ["unknown environment"]),
    (["release", "shop", "--env", "staging", "--ref", "a..b"], ["ref", "git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "../../etc/passwd"], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "x.lock"], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "x y"], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "$(rm -rf /)"], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "main\nevil"], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", ""], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "v" * 300], ["git ref"]),
    (["release", "shop", "--env", "staging", "--ref", "main", "--reason", "x" * 501], ["reason"]),
    (["release", "shop", "--env", "staging", "--ref", "main", "--as", "bad user!"], ["requested_by"]),
    (["release", "shop", "--env", "staging", "--ref", "main", "-o", "yaml"], ["--output"]),
    (["rollback", "shop", "--env", "staging", "--to", "sha256:123"], ["target", "64 hex"]),
    (["rollback", "shop", "--env", "staging", "--to", "bad..ref"], ["target", "git ref"]),
    (["rollback", "shop", "--env", "nowhere"], ["unknown environment"]),
    (["approve", "shop", "--env", "staging", "--comment", "x" * 501], ["comment"]),
    (["approve", "Shop", "--env", "staging"], ["service"]),
    (["status", "shop", "--env", "qa"], ["unknown environment"]),
    (["cancel", "sh op", "--env", "staging"], ["service"]),
    (["history", "Bad Name"], ["service"]),
    (["release", "shop", "--env", "staging"], ["--ref"]),  # a missing option
    # patterns match the whole string: a trailing newline would fork the lock (issue 17)
    (["release", "shop\n", "--env", "staging", "--ref", "main"], ["service", "DNS-1035"]),
    (["release", "shop", "--env", "staging\n", "--ref", "main"], ["unknown environment"]),
    (["release", "shop", "--env", "staging", "--ref", "main", "--as", "carol\n"], ["requested_by"]),
    (["rollback", "shop", "--env", "staging", "--to", "sha256:" + "a" * 64 + "\n"], ["target"]),
    (["approve", "shop\n", "--env", "staging"], ["service"]),
    (["scale", "shop\n", "--env", "staging", "--replicas", "2"], ["service"]),
    (["resources", "shop", "--env", "staging", "--cpu", "500m\n"], ["cpu"]),
    # every duration is bounded (a 3000000d soak once overflowed a workflow's timer)
    (["decommission", "shop", "--soak", "3000000d"], ["soak", "at most 90 days"]),
    (["decommission", "shop", "--soak", "99999999999999999d"], ["soak", "too long"]),
    (["decommission", "shop", "--soak", "30s"], ["--soak", "minimum of 0:01:00", "min_soak"]),
    (["canary", "shop", "--env", "staging", "--ref", "v2", "--max-duration", "400d"],
     ["max_duration", "at most 90 days"]),
]

# spec files for `kepler service create -f` (YAML text, words expected)
SPEC_CASES: list[tuple[str, list[str]]] = [
    (yaml.safe_dump({**OK_SPEC, "name": "Bad"}), ["name", "DNS-1035"]),
    (yaml.safe_dump({**OK_SPEC, "replicas": -1}), ["replicas", "greater than or equal"]),
    (yaml.safe_dump({**OK_SPEC, "replicas": 100000}), ["replicas", "less than or equal"]),
    (yaml.safe_dump({**OK_SPEC, "resources": {"cpu_limit": "lots"}}), ["cpu_limit", "quantity"]),
    (yaml.safe_dump({**OK_SPEC, "resources": {"memory_limit": "1Zi"}}), ["memory_limit"]),
    (yaml.safe_dump({**OK_SPEC, "env": {"1BAD": "x"}}), ["env", "identifier"]),
    (yaml.safe_dump({**OK_SPEC, "config_files": {"../etc/passwd": "x"}}), ["config_files", "ConfigMap key"]),
    (yaml.safe_dump({**OK_SPEC, "config_files": {"a: b\nc": "x"}}), ["config_files"]),
    (yaml.safe_dump({**OK_SPEC, "health_path": "no-slash"}), ["health_path"]),
    (yaml.safe_dump({**OK_SPEC, "exposure": "external"}), ["host is required"]),
    (yaml.safe_dump({**OK_SPEC, "template": "cobol"}), ["template"]),
    (yaml.safe_dump({**OK_SPEC, "privileged": True}), ["privileged", "not permitted"]),
    (yaml.safe_dump({**OK_SPEC, "team": "a\nb: c"}), ["team", "DNS-1123"]),
    (yaml.safe_dump({**OK_SPEC, "template": "custom", "dockerfile": "../../Dockerfile"}), ["dockerfile"]),
    (yaml.safe_dump({**OK_SPEC, "owners": ["<script>"]}), ["owners"]),
    (yaml.safe_dump({**OK_SPEC, "environments": {"qa": {}}}), ["unknown environment 'qa'"]),
    (yaml.safe_dump({**OK_SPEC, "port": 70000}), ["port"]),
    (yaml.safe_dump({**OK_SPEC, "name": "shop\n"}), ["name", "DNS-1035"]),
    (yaml.safe_dump({**OK_SPEC, "team": "payments\n"}), ["team"]),
    (yaml.safe_dump({**OK_SPEC, "env": {"LOG_LEVEL\n": "x"}}), ["env"]),
    ("name: shop\nteam: payments\nname: other\n", ["duplicate key 'name'", ":3:"]),
    ("- a\n- b\n", ["must be a mapping"]),
    ("name: [unclosed\n", [":2:"]),
]


async def kepler(platform_file: Path, *args: str, user: str = "carol") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "kepler"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "KEPLER_CONFIG": str(platform_file), "KEPLER_USER": user, "COLUMNS": "300"})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def world_state(sandbox: Sandbox) -> dict[str, int]:
    return {name: len(httpx.get(f"{sandbox.urls[name]}/_sandbox/audit").json()) for name in STANDINS}


async def workflow_count(client: Any) -> int:
    return len([wf async for wf in client.list_workflows("")])


async def test_cli_refuses_bad_input_with_exit_2_and_changes_nothing(
        sandbox: Sandbox, platform_file: Path, dev_env: Any, tmp_path: Path) -> None:
    before, workflows_before = world_state(sandbox), await workflow_count(dev_env.client)
    cases = list(CLI_CASES)
    for i, (text, words) in enumerate(SPEC_CASES):
        path = tmp_path / f"spec{i}.yaml"
        path.write_text(text)
        cases.append((["service", "create", "-f", str(path)], words))
    cases.append((["service", "create", "-f", str(tmp_path / "missing.yaml")], ["cannot read"]))
    broken = tmp_path / "broken.yaml"
    broken.write_text(platform_file.read_text().replace("min_approvals: 1", "min_approvals: zero"))

    sem = asyncio.Semaphore(4)

    async def check(args: list[str], words: list[str], config: Path = platform_file) -> str | None:
        async with sem:
            code, out = await kepler(config, *args)
        if code != 2:
            return f"{args!r}: exit {code}, wanted 2: {out[-300:]}"
        missing = [w for w in words if w not in out]
        return f"{args!r}: message lacks {missing}: {out[-400:]}" if missing else None

    checks = [check(a, w) for a, w in cases]
    checks.append(check(["release", "shop", "--env", "staging", "--ref", "main"],
                        ["min_approvals", "broken.yaml:", "integer"], broken))
    problems = [p for p in await asyncio.gather(*checks) if p]
    assert len(cases) + 1 >= 48
    assert not problems, "\n".join(problems)
    assert world_state(sandbox) == before
    assert await workflow_count(dev_env.client) == workflows_before


SECRET = "bad-input-signing-secret"


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": chatops.signature(SECRET.encode(), ts, body)}


CHAT_CASES = [
    "release Bad_Name --env staging --ref main", "release shop --env qa --ref main",
    "release shop --env staging --ref a..b", "release shop --env staging",
    "rollback shop --env staging --to sha256:zz", "release ../../etc --env staging --ref main",
    "approve shop --env staging --comment " + "x" * 501, "release shop --env all --ref main",
    "release 'shop\" --env staging", "deploy shop", "release 'shop\n' --env staging --ref main",
]


async def test_chatops_refuses_bad_input_and_changes_nothing(sandbox: Sandbox, dev_env: Any) -> None:
    base = load_platform()
    platform = base.model_copy(update={"chatops": base.chatops.model_copy(update={"users": {"U1": "carol"}})})
    app = chatops.create_app(platform, Secrets(slack_signing_secret=SecretStr(SECRET)), dev_env.client)
    before, workflows_before = world_state(sandbox), await workflow_count(dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as http:
        for text in CHAT_CASES:
            body = urlencode({"user_id": "U1", "command": "/kepler", "text": text}).encode()
            r = await http.post("/slack/commands", content=body, headers=signed(body))
            assert r.status_code == 200, text  # Slack shows only 200 answers to the user
            reply = r.json()["text"]
            assert ":warning:" in reply and ("bad input" in reply or "unknown command" in reply), (text, reply)
    assert world_state(sandbox) == before
    assert await workflow_count(dev_env.client) == workflows_before


def test_client_api_refuses_bad_input_naming_the_field() -> None:
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (ReleaseRequest, dict(service="x" * 41, env="prod", ref="main", requested_by="a"), "service"),
        (ReleaseRequest, dict(service="shop", env="Prod!", ref="main", requested_by="a"), "env"),
        (ReleaseRequest, dict(service="shop", env="prod", ref="a\x00b", requested_by="a"), "ref"),
        (RollbackRequest, dict(service="shop", env="prod", target="sha256:" + "g" * 64, requested_by="a"), "target"),
        (CanaryRequest, dict(service="shop", env="prod", ref="v2", requested_by="a", steps=[50, 10]), "steps"),
        (CanaryRequest, dict(service="shop", env="prod", ref="v2", requested_by="a", steps=[0, 200]), "steps"),
        (CanaryRequest, dict(service="shop", env="prod", ref="v2", requested_by="a", interval="1s"), "interval"),
        (ApprovalDecision, dict(approver=""), "approver"),
        (CreateServiceRequest, dict(spec={"name": "shop"}, requested_by="a"), "spec.team"),
        (ServiceSpec, dict(name="shop", team="t", replicas=-5), "replicas"),
        # what a raw Temporal start decodes through the converter: the same models
        (ReleaseRequest, dict(service="shop\n", env="prod", ref="main", requested_by="a"), "service"),
        (ReleaseRequest, dict(service="shop", env="prod\n", ref="main", requested_by="a"), "env"),
        (ReleaseRequest, dict(service="shop", env="prod", ref="main", requested_by="a\n"), "requested_by"),
        (ApprovalDecision, dict(approver="alice\n"), "approver"),
        (ReleaseRequest, dict(service="shop", env="prod", ref="main", requested_by="a",
                              commit="abc123"), "commit"),
        (ReleaseRequest, dict(service="shop", env="prod", ref="main", requested_by="a",
                              commit="a" * 40 + "\n"), "commit"),
        (RollbackRequest, dict(service="shop", env="prod", target="sha256:" + "a" * 64 + "\n",
                               requested_by="a"), "target"),
    ]
    for model, fields, field in cases:
        with pytest.raises(ValidationError) as e:
            model(**fields)
        assert field in str(e.value).replace("\n", "."), (model.__name__, fields, str(e.value))
