"""The registry stand-in, driven with httpx, and compared with Debian's real docker-registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from sandbox.registry.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings
from tests.helpers import free_port, require_binary, wait_until


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_real_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = require_binary("docker-registry", "/usr/bin/docker-registry")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/v2/").status_code == 200, timeout=20,
                   what="docker-registry to answer /v2/")
    except AssertionError:
        process.kill()
        raise
    return process, url


@pytest.fixture
def real_registry(tmp_path: Path) -> Iterator[str]:
    process, url = start_real_registry(tmp_path)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def registry_box(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(SandboxSettings(state_dir=tmp_path / "state", standins=("registry",))).start()
    try:
        yield box
    finally:
        box.stop()


def error_codes(response: httpx.Response) -> list[str]:
    try:
        return [e["code"] for e in response.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        return []


def push_and_resolve(url: str) -> list[tuple[Any, ...]]:
    """What a client sees pushing an image and reading it back; one tuple per step."""
    seen: list[tuple[Any, ...]] = []
    c = httpx.Client(base_url=url, timeout=10)

    def note(step: str, r: httpx.Response, *extra: Any) -> httpx.Response:
        seen.append((step, r.status_code, r.headers.get("docker-content-digest"),
                     error_codes(r), *extra))
        return r

    r = note("base", c.get("/v2/"))
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"

    layer, config = b"layer bytes" * 50, json.dumps({"architecture": "amd64", "os": "linux",
                                                     "config": {"Labels": {"a": "b"}}}).encode()
    # Monolithic: open a session, PUT everything with the digest.
    start = note("start monolithic", c.post("/v2/demo/svc/blobs/uploads/"))
    assert start.headers["docker-upload-uuid"]
    note("put monolithic", c.put(start.headers["location"] + f"&digest={digest_of(config)}",
                                 content=config))
    # Chunked: two PATCHes, then PUT with the digest and no body.
    start = note("start chunked", c.post("/v2/demo/svc/blobs/uploads/"))
    first = note("patch 1", c.patch(start.headers["location"], content=layer[:100],
                                    headers={"content-range": "0-99"}), )
    seen[-1] += (first.headers["range"],)
    second = note("patch 2", c.patch(first.headers["location"], content=layer[100:],
                                     headers={"content-range": f"100-{len(layer) - 1}"}))
    seen[-1] += (second.headers["range"],)
    note("put chunked", c.put(second.headers["location"] + f"&digest={digest_of(layer)}"))
    blob = note("head blob", c.head(f"/v2/demo/svc/blobs/{digest_of(layer)}"))
    seen[-1] += (blob.headers["content-length"],)
    note("get blob", c.get(f"/v2/demo/svc/blobs/{digest_of(config)}"), )
    # A bad digest, an unknown blob, a malformed digest.
    start = c.post("/v2/demo/svc/blobs/uploads/")
    note("bad digest", c.put(start.headers["location"] + "&digest=sha256:" + "0" * 64, content=b"xyz"))
    note("unknown blob", c.get("/v2/demo/svc/blobs/sha256:" + "1" * 64))
    note("malformed digest", c.get("/v2/demo/svc/blobs/sha256:abc"))

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
    }).encode()
    oci = {"content-type": OCI_MANIFEST}
    note("put manifest", c.put("/v2/demo/svc/manifests/v1", content=manifest, headers=oci))
    note("put again by tag", c.put("/v2/demo/svc/manifests/latest", content=manifest, headers=oci))
    head = note("head by tag", c.head("/v2/demo/svc/manifests/v1", headers={"accept": OCI_MANIFEST}))
    got = note("get by digest", c.get(f"/v2/demo/svc/manifests/{head.headers['docker-content-digest']}",
                                      headers={"accept": OCI_MANIFEST}))
    assert got.content == manifest and got.headers["content-type"] == OCI_MANIFEST
    note("no oci accept", c.get("/v2/demo/svc/manifests/v1"))
    tags = note("tags", c.get("/v2/demo/svc/tags/list"))
    seen[-1] += (sorted(tags.json()["tags"]),)
    note("unknown tag", c.get("/v2/demo/svc/manifests/nope", headers={"accept": OCI_MANIFEST}))
    note("unknown repo tags", c.get("/v2/demo/nosuch/tags/list"))
    missing = manifest.replace(digest_of(layer).encode(), b"sha256:" + b"2" * 64)
    note("missing blob", c.put("/v2/demo/svc/manifests/v2", content=missing, headers=oci))
    note("not json", c.put("/v2/demo/svc/manifests/v3", content=b"not json", headers=oci))
    note("digest mismatch", c.put("/v2/demo/svc/manifests/sha256:" + "3" * 64, content=manifest,
                                  headers=oci))
    note("catalog", c.get("/v2/_catalog"), c.get("/v2/_catalog").json())
    note("delete by tag", c.delete("/v2/demo/svc/manifests/v1"))
    note("delete by digest", c.delete(f"/v2/demo/svc/manifests/{digest_of(manifest)}"))
    note("gone", c.get(f"/v2/demo/svc/manifests/{digest_of(manifest)}", headers={"accept": OCI_MANIFEST}))
    note("invalid name", c.post("/v2/Demo/SVC/blobs/uploads/"))
    return seen


def test_stand_in_agrees_with_real_docker_registry(real_registry: str, registry_box: Sandbox) -> None:
    real = push_and_resolve(real_registry)
    ours = push_and_resolve(registry_box.urls["registry"])
    # Compare step by step so a failure names the step that differs.
    for expected, actual in zip(real, ours):
        if expected[0] == "invalid name":  # real: plain-text 404; ours adds the NAME_INVALID body
            assert (actual[1], actual[3]) == (404, ["NAME_INVALID"])
            continue
        assert actual == expected
    assert len(real) == len(ours)


def test_push_resolve_and_errors_without_the_real_registry(registry_box: Sandbox) -> None:
    steps = {s[0]: s for s in push_and_resolve(registry_box.urls["registry"])}
    assert steps["put manifest"][1] == 201
    assert steps["head by tag"][2] == steps["put manifest"][2]
    assert steps["tags"][-1] == ["latest", "v1"]
    assert steps["bad digest"][1:4:2] == (400, ["DIGEST_INVALID"])
    assert steps["unknown blob"][1:4:2] == (404, ["BLOB_UNKNOWN"])
    assert steps["unknown tag"][1:4:2] == (404, ["MANIFEST_UNKNOWN"])
    assert steps["missing blob"][1:4:2] == (400, ["MANIFEST_BLOB_UNKNOWN"])
    assert steps["delete by digest"][1] == 202 and steps["gone"][1] == 404
    audit = [e["action"] for e in registry_box.world.audits["registry"].entries]
    assert {"push_blob", "put_manifest", "delete_manifest"} <= set(audit)


def push_small_image(url: str, repository: str, tag: str) -> str:
    c = httpx.Client(base_url=url)
    config = json.dumps({"repo": repository}).encode()
    start = c.post(f"/v2/{repository}/blobs/uploads/")
    c.put(start.headers["location"] + f"&digest={digest_of(config)}", content=config).raise_for_status()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                           "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config),
                                      "size": len(config)}}).encode()
    r = c.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
              headers={"content-type": OCI_MANIFEST})
    r.raise_for_status()
    return r.headers["docker-content-digest"]


def test_catalog_and_tags_paginate_with_link_headers(registry_box: Sandbox) -> None:
    url = registry_box.urls["registry"]
    for repo in ("team/a", "team/b", "team/c"):
        push_small_image(url, repo, "v1")
    push_small_image(url, "team/a", "v2")
    first = httpx.get(f"{url}/v2/_catalog", params={"n": 2})
    assert first.json() == {"repositories": ["team/a", "team/b"]}
    assert first.headers["link"] == '</v2/_catalog?last=team%2Fb&n=2>; rel="next"'
    rest = httpx.get(f"{url}/v2/_catalog", params={"n": 2, "last": "team/b"})
    assert rest.json() == {"repositories": ["team/c"]} and "link" not in rest.headers
    tags = httpx.get(f"{url}/v2/team/a/tags/list", params={"n": 1})
    assert tags.json() == {"name": "team/a", "tags": ["v1"]}
    assert 'rel="next"' in tags.headers["link"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    settings = SandboxSettings(state_dir=tmp_path, standins=("registry",))
    box = Sandbox(settings).start()
    digest = push_small_image(box.urls["registry"], "demo/keep", "v1")
    box.stop()
    box = Sandbox(settings).start()
    try:
        r = httpx.head(f"{box.urls['registry']}/v2/demo/keep/manifests/v1",
                       headers={"accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.headers["docker-content-digest"] == digest
    finally:
        box.stop()


def test_injected_faults_reach_the_client(registry_box: Sandbox) -> None:
    url = registry_box.urls["registry"]
    digest = push_small_image(url, "demo/flaky", "v1")
    rule = {"method": "HEAD", "path": "/manifests/", "status": 503, "count": 1}
    assert httpx.post(f"{url}/_sandbox/faults", json=rule).status_code == 201
    head = lambda: httpx.head(f"{url}/v2/demo/flaky/manifests/v1",  # noqa: E731
                              headers={"accept": OCI_MANIFEST})
    assert head().status_code == 503
    retried = head()
    assert retried.status_code == 200 and retried.headers["docker-content-digest"] == digest

    httpx.post(f"{url}/_sandbox/faults", json={"path": "/tags/list", "drop": True}).raise_for_status()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/v2/demo/flaky/tags/list")
    assert httpx.get(f"{url}/v2/demo/flaky/tags/list").json()["tags"] == ["v1"]
