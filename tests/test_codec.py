"""Encrypted payloads: with KEPLER_CODEC_KEYS set, Temporal's history holds no readable
input or result; `kepler codec-server` decodes them for the UI, behind a bearer token."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.worker import Worker

from kepler.codec import CodecError, EncryptionCodec, parse_keys
from kepler.models import ApprovalDecision
from kepler.clients.temporal import data_converter
from tests.helpers import free_port, wait_until
from tests.fakes.sample_workflows import Echo

OLD_KEY = base64.b64encode(b"o" * 32).decode()
NEW_KEY = base64.b64encode(b"n" * 32).decode()
KEYS = f"k2:{NEW_KEY},k1:{OLD_KEY}"
TOKEN = "codec-token-for-tests"
SECRET_TEXT = "rotate the vault password hunter2-7f3a"


@pytest.fixture(scope="module")
def codec_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "kepler"), "codec-server", "--port", str(port)],
        env={**os.environ, "KEPLER_CODEC_KEYS": KEYS, "KEPLER_CODEC_AUTH_TOKEN": TOKEN,
             "KEPLER_CODEC_CORS_ORIGINS": "http://127.0.0.1:8233"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=20,
                   what="kepler codec-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_history_is_unreadable_without_the_key_and_the_codec_server_reads_it(
        dev_env: Any, codec_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEPLER_CODEC_KEYS", KEYS)
    target = dev_env.client.service_client.config.target_host
    client = await Client.connect(target, data_converter=data_converter())
    queue = f"codec-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[Echo]):
        result = await client.execute_workflow(
            Echo.run, ApprovalDecision(approver="alice", comment=SECRET_TEXT),
            id=f"codec-{uuid.uuid4().hex[:6]}", task_queue=queue)
    assert result.comment == f"echo: {SECRET_TEXT}"  # the key holder reads everything

    plain = dev_env.client  # no codec: what someone with only Temporal access sees
    executions = [e async for e in plain.list_workflows(f"TaskQueue = '{queue}'")]
    assert len(executions) == 1
    history = await plain.get_workflow_handle(executions[0].id).fetch_history()
    raw = history.to_json()
    assert SECRET_TEXT not in raw and "hunter2" not in raw
    assert "alice" not in raw  # the input model is encrypted as a whole
    started = history.events[0].workflow_execution_started_event_attributes.input
    completed = next(e for e in history.events if e.HasField(
        "workflow_execution_completed_event_attributes")).workflow_execution_completed_event_attributes.result
    assert started.payloads[0].metadata["encryption-key-id"] == b"k2"

    body = json_format.MessageToJson(Payloads(payloads=[*started.payloads, *completed.payloads]))
    async with httpx.AsyncClient(base_url=codec_server) as http:
        ok = await http.post("/decode", content=body, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
            "X-Namespace": "default"})
        wrong = await http.post("/decode", content=body, headers={"Authorization": "Bearer nope"})
        missing = await http.post("/decode", content=body)
        preflight = await http.options("/decode", headers={
            "Origin": "http://127.0.0.1:8233", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace"})
        foreign = await http.options("/decode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 200, ok.text
    decoded = json_format.Parse(ok.text, Payloads()).payloads
    assert [base64.b64decode(json_format.MessageToDict(p)["metadata"]["encoding"]) for p in decoded] \
        == [b"json/plain", b"json/plain"]
    assert SECRET_TEXT in decoded[0].data.decode() and f"echo: {SECRET_TEXT}" in decoded[1].data.decode()
    assert wrong.status_code == 401 and missing.status_code == 401 and SECRET_TEXT not in wrong.text
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    assert "access-control-allow-origin" not in foreign.headers

    # /encode round-trips through /decode
    async with httpx.AsyncClient(base_url=codec_server,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        clear = Payloads(payloads=[Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')])
        enc = await http.post("/encode", content=json_format.MessageToJson(clear))
        back = await http.post("/decode", content=enc.text)
    assert json_format.Parse(back.text, Payloads()) == clear
    assert json_format.Parse(enc.text, Payloads()) != clear


async def test_rotation_decodes_old_keys_and_names_unknown_ones() -> None:
    old = EncryptionCodec.from_text(f"k1:{OLD_KEY}")
    rotated = EncryptionCodec.from_text(KEYS)
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'{"comment": "x"}')
    [sealed_old] = await old.encode([payload])
    [sealed_new] = await rotated.encode([payload])
    assert sealed_new.metadata["encryption-key-id"] == b"k2"
    assert await rotated.decode([sealed_old, sealed_new]) == [payload, payload]
    with pytest.raises(CodecError, match="unknown key id 'k2'"):
        await old.decode([sealed_new])
    forged = EncryptionCodec.from_text(f"k1:{NEW_KEY}")  # same id, another key
    with pytest.raises(CodecError, match="does not authenticate"):
        await forged.decode([sealed_old])
    assert await rotated.decode([payload]) == [payload]  # unencrypted history still reads


def test_key_configuration_errors_never_echo_key_material() -> None:
    with pytest.raises(CodecError, match="must be 16, 24 or 32 bytes") as e:
        parse_keys("k1:" + base64.b64encode(b"short-secret").decode())
    assert "short-secret" not in str(e.value) and base64.b64encode(b"short-secret").decode() not in str(e.value)
    with pytest.raises(CodecError, match="not valid base64"):
        parse_keys("k1:%%%")
    with pytest.raises(CodecError, match="listed twice"):
        parse_keys(f"k1:{OLD_KEY},k1:{NEW_KEY}")
    assert parse_keys(f" k9:{OLD_KEY} ")[0] == "k9"


def test_codec_server_refuses_to_start_without_a_token() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "kepler"), "codec-server"],
                            env={**os.environ, "KEPLER_CODEC_KEYS": KEYS, "KEPLER_CODEC_AUTH_TOKEN": ""},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "KEPLER_CODEC_AUTH_TOKEN must be set" in result.stderr

