"""The alert path end to end with the real components: the real Prometheus (Debian's)
scraping the sandbox's Istio-style metrics and evaluating deploy/prometheus's rule, the
real Alertmanager (Debian's prometheus-alertmanager) routing with deploy/alertmanager's
configuration, and the real `kepler alerts` command, the dev server, the worker and the
sandbox. A version whose commit asks for 20 % of 5xx makes the rule fire; Alertmanager
notifies Kepler, which rolls the service back once although Alertmanager repeats the
notification; the error rate drops, the alert resolves, and the resolved notification
does nothing. Only the durations are shortened to seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from sandbox.serve import Sandbox
from tests.e2e.test_alerts import image_of, operations
from tests.e2e.test_release import BIN, gitlab_client, kepler
from tests.helpers import free_port, real_alertmanager, real_prometheus, require_binary, stop_process
from tests.workers import wait_for

pytestmark = pytest.mark.e2e
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "kepler-alerts.rules.yaml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yaml"
TOKEN = "am-e2e-token"
SERVICE, ENV = "wallet", "staging"
WINDOW = "10s"  # the rule's rate window: the alert stays firing this long once errors stop


def test_shipped_files_are_valid() -> None:
    """The files as shipped (the e2e test below shortens their durations), checked by the
    tools of Debian's prometheus and prometheus-alertmanager."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager", "alertmanager")
    for tool, args in (("promtool", ["check", "rules", str(RULES)]),
                       ("amtool", ["check-config", str(ALERTMANAGER)])):
        done = subprocess.run([require_binary(tool), *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    readme = " ".join((DEPLOY.parent / "README.md").read_text().split())
    for group in yaml.safe_load(RULES.read_text())["groups"]:  # the README shows these
        assert all(" ".join(rule["expr"].split()) in readme for rule in group["rules"])
    hook = kepler_hook(yaml.safe_load(ALERTMANAGER.read_text()))
    assert set(hook["http_config"]["authorization"]) == {"type", "credentials_file"}  # not inline
    assert hook["send_resolved"] is True


def kepler_hook(config: dict[str, Any]) -> dict[str, Any]:
    (receiver,) = [r for r in config["receivers"] if r["name"] == "kepler"]
    (hook,) = receiver["webhook_configs"]
    return hook


def fast_rules(home: Path) -> Path:
    """deploy/prometheus's rules with the window and `for` in seconds."""
    doc = yaml.safe_load(RULES.read_text())
    windows = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "record" in rule:  # the window this test shortens is the recording rule's
                assert "[2m]" in rule["expr"], rule
            windows += rule["expr"].count("[2m]")
            rule["expr"] = rule["expr"].replace("[2m]", f"[{WINDOW}]")
            if "alert" in rule:
                rule["for"] = "0s"
    assert windows, "no [2m] window in the shipped rules: nothing was shortened"
    path = home / "kepler-alerts.rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fast_alertmanager(home: Path, receiver_port: int) -> dict[str, Any]:
    """deploy/alertmanager's configuration with intervals in seconds, the webhook pointed
    at the receiver on loopback, the token in a file of the test's own."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "kepler"]
    route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")
    token_file = home / "kepler-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    hook = kepler_hook(config)
    hook["url"] = f"http://127.0.0.1:{receiver_port}/alertmanager"
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


@contextmanager
def kepler_alerts(platform_file: Path, port: int, log: Path) -> Iterator[str]:
    """The real `kepler alerts` command on `port`, logging JSON lines to `log`."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "kepler"), "alerts", "--port", str(port)], stdout=out, stderr=out,
            env={**os.environ, "KEPLER_CONFIG": str(platform_file),
                 "KEPLER_ALERTMANAGER_TOKEN": TOKEN, "KEPLER_LOG_FORMAT": "json"})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def answers(log: Path, fingerprint: str) -> list[tuple[str, str]]:
    """(notification status, Kepler's answer) for each notification about `fingerprint`
    that `kepler alerts` logged ("alerts: firing from kepler: <fp>: <answer>; ...")."""
    found = []
    for line in log.read_text().splitlines():
        try:
            message = json.loads(line).get("message", "")
        except ValueError:
            continue  # uvicorn's own lines
        m = re.fullmatch(r"alerts: (firing|resolved) from kepler: (.*)", message)
        for part in (m[2].split("; ") if m else ()):
            fp, _, answer = part.partition(": ")
            if fp == fingerprint:
                found.append((m[1], answer))
    return found


async def get_json(url: str, **params: str) -> Any:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(url, params=params)
        r.raise_for_status()
        return r.json()


async def spec_writes(sandbox: Sandbox) -> list[dict]:
    """Writes of the service's Deployment spec (each a new generation), as in
    tests/reliability/test_crash.py."""
    writes, generation = [], None
    for e in await get_json(f"{sandbox.urls['kubernetes']}/_sandbox/audit"):
        if (e.get("kind"), e.get("namespace"), e.get("name")) != ("Deployment", f"{SERVICE}-{ENV}",
                                                                 SERVICE):
            continue
        new_spec, generation = e.get("generation") != generation, e.get("generation")
        if new_spec and e.get("by") == "api" and e["action"] != "create":
            writes.append(e)
    return writes


async def test_real_alertmanager_rolls_back_once_and_resolves(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    receiver_port = free_port()
    (tmp_path / "am").mkdir()
    (tmp_path / "prom").mkdir()
    am_config = fast_alertmanager(tmp_path / "am", receiver_port)
    # kepler.yaml for the receiver: alerts of the shipped rule roll this test's service back
    # (only it: other tests' services in the session's sandbox may alert too)
    config = yaml.safe_load(platform_file.read_text())
    config["alerts"]["rollback"] = [{"match": {"alertname": "KeplerHighErrorRate",
                                               "severity": "critical"}, "services": [SERVICE]}]
    receiver_file = tmp_path / "kepler.yaml"
    receiver_file.write_text(yaml.safe_dump(config, sort_keys=False))

    with real_alertmanager(am_config, tmp_path / "am") as am, \
            real_prometheus(sandbox.urls["kubernetes"].removeprefix("http://"), tmp_path / "prom",
                            rule_files=(fast_rules(tmp_path / "prom"),), alertmanager=am) as prom:
        # a good version, then one answering 20 % of its requests with 500s
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(
            {"name": SERVICE, "team": "fin", "replicas": 1}))
        assert (await kepler(platform_file, "service", "create", "-f",
                             str(tmp_path / "spec.yaml"), "--watch"))[0] == 0
        assert (await kepler(platform_file, "release", SERVICE, "--env", ENV, "--ref", "main",
                             "--watch"))[0] == 0
        v1 = image_of(sandbox, SERVICE, ENV)
        gitlab_client(sandbox).projects.get(f"demo/{SERVICE}").commits.create({
            "branch": "main", "commit_message": "v2: 20 % of 5xx", "actions": [
                {"action": "create", "file_path": "kepler-sandbox.yaml",
                 "content": "error_rate: 0.2\n"}]})
        assert (await kepler(platform_file, "release", SERVICE, "--env", ENV, "--ref", "main",
                             "--watch"))[0] == 0
        v2 = image_of(sandbox, SERVICE, ENV)
        assert v2 != v1

        # the real rule fires, with the labels Kepler's receiver reads
        async def firing() -> list[dict]:
            return [a for a in await get_json(f"{am}/api/v2/alerts", active="true",
                                              filter=f'kepler_service="{SERVICE}"')
                    if a["status"]["state"] == "active"]
        (alert,) = await wait_for(firing, timeout=30, interval=0.2, what="the alert firing")
        assert alert["labels"]["alertname"] == "KeplerHighErrorRate"
        assert alert["labels"]["kepler_env"] == ENV and alert["labels"]["severity"] == "critical"
        fingerprint = alert["fingerprint"]
        before = await spec_writes(sandbox)

        # Kepler's receiver starts only now: an alert meeting the release still holding
        # the lock would be answered `busy` (README); Alertmanager retries until it is up
        log = tmp_path / "kepler-alerts.log"
        with kepler_alerts(receiver_file, receiver_port, log) as receiver:
            async with httpx.AsyncClient(timeout=5) as http:
                async def up() -> bool:
                    try:
                        return (await http.get(f"{receiver}/healthz")).text == "ok"
                    except httpx.TransportError:
                        return False
                await wait_for(up, timeout=30, what=f"kepler alerts up (log: {log})")
                # the real command's token check
                for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                    r = await http.post(f"{receiver}/alertmanager", headers=headers, json={})
                    assert r.status_code == 401

            # the first notification acts; at least one repeat is answered `duplicate`
            def repeated() -> bool:
                return ("firing", "duplicate") in answers(log, fingerprint)
            await wait_for(repeated, timeout=40, interval=0.2,
                           what=f"a repeated notification (log: {log})")
            async def rolled_back() -> dict | None:
                out = (await kepler(platform_file, "status", SERVICE, "--env", ENV, "-o", "json"))[1]
                s = json.loads(out) if out.strip() else {}
                done = s.get("operation") == "rollback" and s.get("outcome") != "running"
                return s if done else None
            status = await wait_for(rolled_back, timeout=60, interval=0.2, what="the rollback")
            assert status["operation"] == "rollback" and status["outcome"] == "succeeded", status
            assert status["requested_by"] == "alerts" and status["requester_verified"]
            assert image_of(sandbox, SERVICE, ENV) == v1

            # the error rate drops, the alert resolves, and its notification does nothing
            def resolved() -> bool:
                return ("resolved", "ignored") in answers(log, fingerprint)
            await wait_for(resolved, timeout=40, interval=0.2,
                           what=f"the resolved notification (log: {log})")
            got = answers(log, fingerprint)

        first, *rest = got
        assert first[0] == "firing" and first[1] in ("rollback_started", "handling"), got
        assert set(rest) <= {("firing", "duplicate"), ("resolved", "ignored")}, got
        ops = await operations(platform_file, SERVICE, ENV)
        assert ops.count("alert") == 1 and ops.count("rollback") == 1, ops
        after = (await spec_writes(sandbox))[len(before):]
        assert [w["images"] for w in after] == [[v1]], after  # the rollback, written once
        (ratio,) = (await get_json(f"{prom}/api/v1/query", query=(
            f'kepler:istio_requests:error_ratio{{destination_service_name="{SERVICE}"}}')))[
                "data"]["result"]
        assert float(ratio["value"][1]) < 0.05
        left = await get_json(f"{am}/api/v2/alerts", filter=f'kepler_service="{SERVICE}"')
        assert left == [], left  # resolved in Alertmanager too
