"""A small asyncio client for a real Kubernetes API server (httpx), enough for the bridge: list,
watch (JSON lines), merge patch and create, authenticated the way a kubeconfig says (bearer
token or client certificate; the cluster's CA, or no verification when the kubeconfig says so).
It runs on the sandbox's event loop, where the official client's blocking calls would stall
every stand-in."""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.kubernetes.resources import Resource

WATCH_SECONDS = 240  # the server ends each watch after this; the bridge starts another


class ApiStatusError(RuntimeError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code


class Gone(ApiStatusError):
    """410: the resourceVersion a watch started from is too old; list again."""


def resource_path(res: Resource, namespace: str | None = None, name: str | None = None) -> str:
    base = f"/apis/{res.group}/{res.versions[0]}" if res.group else f"/api/{res.versions[0]}"
    if namespace is not None and res.namespaced:
        base += f"/namespaces/{namespace}"
    base += f"/{res.plural}"
    return f"{base}/{name}" if name is not None else base


def _data_or_file(entry: dict[str, Any], key: str) -> bytes | None:
    """A kubeconfig's `<key>-data` (base64) or `<key>` (a file path) as bytes."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        return Path(os.path.expanduser(entry[key])).read_bytes()
    return None


def _ssl_context(cluster: dict[str, Any], user: dict[str, Any]) -> ssl.SSLContext:
    ca = _data_or_file(cluster, "certificate-authority")
    ctx = ssl.create_default_context(cadata=ca.decode() if ca else None)
    if cluster.get("insecure-skip-tls-verify"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert, key = _data_or_file(user, "client-certificate"), _data_or_file(user, "client-key")
    if cert and key:
        # ssl loads a certificate chain only from files: a private temporary directory
        with tempfile.TemporaryDirectory(prefix="kepler-kubeconfig-") as tmp:
            cert_file, key_file = Path(tmp) / "client.crt", Path(tmp) / "client.key"
            cert_file.write_bytes(cert)
            key_file.write_bytes(key)
            ctx.load_cert_chain(cert_file, key_file)
    return ctx


class KubeApi:
    def __init__(self, server: str, headers: dict[str, str], verify: ssl.SSLContext) -> None:
        self.server = server.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.server, headers={"Accept": "application/json", **headers},
            verify=verify, trust_env=False, timeout=httpx.Timeout(15.0))

    @classmethod
    def from_kubeconfig(cls, path: Path | str, context: str | None = None) -> KubeApi:
        config = yaml.safe_load(Path(path).read_text())
        name = context or config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in config.get("users") or [] if u["name"] == ctx.get("user")), {})
        headers = {}
        token = user.get("token") or (Path(user["tokenFile"]).read_text().strip() if user.get("tokenFile") else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return cls(cluster["server"], headers, _ssl_context(cluster, user))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise (Gone if r.status_code == 410 else ApiStatusError)(r.status_code, message)
        return r.json()

    async def get(self, path: str, **params: str) -> Any:
        return await self._check(await self.client.get(path, params=params))

    async def list(self, res: Resource) -> tuple[list[dict[str, Any]], str]:
        """Every object of `res` in every namespace, each with apiVersion and kind, and the list's
        resourceVersion (where a watch starts)."""
        body = await self.get(resource_path(res))
        items = body.get("items") or []
        for item in items:
            item.setdefault("apiVersion", res.api_version())
            item.setdefault("kind", res.kind)
        return items, str(body["metadata"]["resourceVersion"])

    async def watch(self, res: Resource, resource_version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(ADDED|MODIFIED|DELETED|BOOKMARK, object) from `resource_version` on, until the server
        ends the watch; raises Gone when it has to start again from a list."""
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = httpx.Timeout(15.0, read=WATCH_SECONDS + 30)
        async with self.client.stream("GET", resource_path(res), params=params, timeout=timeout) as r:
            if r.status_code >= 400:
                await r.aread()
                await self._check(r)
            async for line in r.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    raise (Gone if obj.get("code") == 410 else ApiStatusError)(
                        int(obj.get("code") or 500), str(obj.get("message")))
                yield kind, obj

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self._check(await self.client.patch(
            path, content=json.dumps(body), headers={"Content-Type": "application/merge-patch+json"}))

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        return await self._check(await self.client.post(path, json=body))
