"""Registry stand-in: the Distribution API v2 subset Kepler and the Jenkins stand-in use.

Status codes, headers and error bodies follow Debian's docker-registry 2.8
(tests/test_sandbox_registry.py runs the same sequence against both):
a POST with `?digest=` opens an upload session (202) like the real one rather
than completing a single-request upload; OCI manifests fetched by tag need an
Accept header naming their media type; invalid repository names get 404.

Blobs live as files under the state dir; repositories, manifests and tags in
a StateStore document.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.common import StateStore
from sandbox.registry.oci import (DIGEST_RE, DOCKER_CONFIG, MANIFEST_TYPES, OCI_CONFIG, OCI_INDEX,
                                  OCI_MANIFEST, DOCKER_LIST, TAG_RE, sha256_digest, valid_digest,
                                  valid_repository)
from sandbox.world import World

API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
_JSON = "application/json; charset=utf-8"
_MESSAGES = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "TAG_INVALID": "manifest tag did not match URI",
}
_MISSING = object()


def _compact(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def error(status: int, *errors: tuple[str, Any]) -> Response:
    """`errors` are (code, detail) pairs; detail _MISSING leaves the key out, as the registry does."""
    body = []
    for code, detail in errors:
        item: dict[str, Any] = {"code": code, "message": _MESSAGES[code]}
        if detail is not _MISSING:
            item["detail"] = detail
        body.append(item)
    return Response(_compact({"errors": body}) + "\n", status_code=status,
                    media_type=_JSON, headers=API_HEADER)


class RegistryStore:
    def __init__(self, root: Path | None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="kepler-registry-"))
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.uploads_dir = self.root / "uploads"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.uploads_dir, ignore_errors=True)  # sessions do not survive restarts
        self.uploads_dir.mkdir(parents=True)
        self.state = StateStore(root / "state.json" if root else None, {"repositories": {}})
        self.uploads: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()

    @property
    def repos(self) -> dict[str, dict[str, Any]]:
        return self.state.data["repositories"]

    def repo(self, name: str) -> dict[str, Any]:
        return self.repos.setdefault(name, {"blobs": [], "manifests": {}, "tags": {}, "listed": False})

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest.split(":", 1)[1]

    def has_blob(self, name: str, digest: str) -> bool:
        repo = self.repos.get(name)
        return bool(repo) and digest in repo["blobs"] and self.blob_path(digest).exists()

    def write_blob(self, name: str, data_file: Path, digest: str) -> None:
        target = self.blob_path(digest)
        if not target.exists():
            data_file.replace(target)
        with self.state.lock:
            blobs = self.repo(name)["blobs"]
            if digest not in blobs:
                blobs.append(digest)
            self.state.save()


def _upload_state(upload_id: str, offset: int) -> str:
    raw = json.dumps({"uuid": upload_id, "offset": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_state(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None


def _location(request: Request, path: str) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{path}"


def create_app(world: World) -> Starlette:
    store = RegistryStore(world.state_path("registry"))
    audit = world.audits["registry"]

    def upload_headers(request: Request, name: str, upload_id: str) -> dict[str, str]:
        upload = store.uploads[upload_id]
        size = upload["size"]
        state = _upload_state(upload_id, size)
        return {**API_HEADER, "Docker-Upload-UUID": upload_id,
                "Location": _location(request, f"/v2/{name}/blobs/uploads/{upload_id}?_state={state}"),
                "Range": f"0-{max(size - 1, 0)}"}

    async def start_upload(request: Request, name: str) -> Response:
        mount, source = request.query_params.get("mount"), request.query_params.get("from")
        if mount and source and valid_digest(mount) and store.has_blob(source, mount):
            store.write_blob(name, store.blob_path(mount), mount)
            audit.record("mount_blob", repository=name, digest=mount, source=source)
            return Response(status_code=201, headers={
                **API_HEADER, "Docker-Content-Digest": mount, "Content-Length": "0",
                "Location": _location(request, f"/v2/{name}/blobs/{mount}")})
        upload_id = str(uuid.uuid4())
        (store.uploads_dir / upload_id).write_bytes(b"")
        store.uploads[upload_id] = {"name": name, "size": 0}
        return Response(status_code=202, headers={**upload_headers(request, name, upload_id),
                                                  "Content-Length": "0"})

    def find_upload(request: Request, name: str, upload_id: str) -> Response | None:
        state = _read_state(request.query_params.get("_state"))
        if state is None or state.get("uuid") != upload_id:
            return error(404, ("BLOB_UPLOAD_INVALID", {}))
        upload = store.uploads.get(upload_id)
        if upload is None or upload["name"] != name:
            return error(404, ("BLOB_UPLOAD_UNKNOWN", {}))
        if state.get("offset") != upload["size"]:
            return error(404, ("BLOB_UPLOAD_INVALID", _MISSING))
        return None

    async def append(upload_id: str, request: Request) -> None:
        data = await request.body()
        with (store.uploads_dir / upload_id).open("ab") as f:
            f.write(data)
        store.uploads[upload_id]["size"] += len(data)

    async def upload(request: Request, name: str, upload_id: str) -> Response:
        problem = find_upload(request, name, upload_id)
        if problem is not None:
            return problem
        method = request.method
        if method == "GET":
            return Response(status_code=204, headers=upload_headers(request, name, upload_id))
        if method == "DELETE":
            del store.uploads[upload_id]
            (store.uploads_dir / upload_id).unlink(missing_ok=True)
            return Response(status_code=204, headers={**API_HEADER, "Docker-Upload-UUID": upload_id})
        if method == "PATCH":
            # Like docker-registry 2.8, the Content-Range header is not checked: the
            # `_state` offset in the Location already rejects out-of-order chunks.
            await append(upload_id, request)
            return Response(status_code=202, headers={**upload_headers(request, name, upload_id),
                                                      "Content-Length": "0"})
        # PUT: the last chunk (maybe empty) and the digest that closes the upload.
        digest = request.query_params.get("digest")
        if not digest:
            return error(400, ("DIGEST_INVALID", "digest missing"))
        if not DIGEST_RE.match(digest) or not valid_digest(digest):
            return error(400, ("DIGEST_INVALID", "digest parsing failed"))
        await append(upload_id, request)
        data_file = store.uploads_dir / upload_id
        actual = sha256_digest(data_file.read_bytes())
        del store.uploads[upload_id]
        if actual != digest:
            data_file.unlink(missing_ok=True)
            return error(400, ("DIGEST_INVALID", {"Digest": digest, "Reason": {}}))
        store.write_blob(name, data_file, digest)
        audit.record("push_blob", repository=name, digest=digest)
        return Response(status_code=201, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Content-Length": "0",
            "Location": _location(request, f"/v2/{name}/blobs/{digest}")})

    async def blob(request: Request, name: str, digest: str) -> Response:
        if not DIGEST_RE.match(digest) or not valid_digest(digest):
            return error(400, ("DIGEST_INVALID", {}))
        if not store.has_blob(name, digest):
            return error(404, ("BLOB_UNKNOWN", _MISSING if request.method == "DELETE" else digest))
        if request.method == "DELETE":
            with store.state.lock:
                store.repos[name]["blobs"].remove(digest)
                store.state.save()
            audit.record("delete_blob", repository=name, digest=digest)
            return Response(status_code=202, headers={**API_HEADER, "Content-Length": "0"})
        path = store.blob_path(digest)
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Accept-Ranges": "bytes", "Cache-Control": "max-age=31536000",
                   "Content-Length": str(path.stat().st_size)}
        body = b"" if request.method == "HEAD" else path.read_bytes()
        return Response(body, headers=headers, media_type="application/octet-stream")

    def manifest_problems(name: str, media_type: str, doc: Any) -> list[tuple[str, Any]]:
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return [("MANIFEST_INVALID", {})]
        if doc.get("mediaType", media_type) != media_type:
            return [("MANIFEST_INVALID", {})]
        if media_type in (OCI_INDEX, DOCKER_LIST):
            children = doc.get("manifests")
            if not isinstance(children, list):
                return [("MANIFEST_INVALID", {})]
            repo = store.repos.get(name, {"manifests": {}})
            return [("MANIFEST_BLOB_UNKNOWN", c.get("digest")) for c in children
                    if not isinstance(c, dict) or c.get("digest") not in repo["manifests"]]
        config, layers = doc.get("config"), doc.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            return [("MANIFEST_INVALID", {})]
        if config.get("mediaType") not in (OCI_CONFIG, DOCKER_CONFIG, None) and media_type == DOCKER_MANIFEST:
            return [("MANIFEST_INVALID", {})]
        problems = []
        for ref in [config, *layers]:
            digest = ref.get("digest", "") if isinstance(ref, dict) else ""
            if not valid_digest(digest):
                problems.append(("MANIFEST_INVALID", {}))
            elif not store.has_blob(name, digest):
                problems.append(("MANIFEST_BLOB_UNKNOWN", digest))
        return problems

    async def put_manifest(request: Request, name: str, reference: str) -> Response:
        body = await request.body()
        media_type = request.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            return error(400, ("MANIFEST_INVALID", {}))
        try:
            doc = json.loads(body)
        except ValueError as e:
            return error(400, ("MANIFEST_INVALID", {"Offset": getattr(e, "pos", 0)}))
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            return error(400, ("DIGEST_INVALID", _MISSING))
        problems = manifest_problems(name, media_type, doc)
        if problems:
            return error(400, *problems)
        (store.blob_path(digest)).write_bytes(body)
        with store.state.lock:
            repo = store.repo(name)
            repo["manifests"][digest] = media_type
            repo["listed"] = True
            if not reference.startswith("sha256:"):
                repo["tags"][reference] = digest
            store.state.save()
        audit.record("put_manifest", repository=name, reference=reference, digest=digest,
                     media_type=media_type)
        return Response(status_code=201, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Content-Length": "0",
            "Location": _location(request, f"/v2/{name}/manifests/{digest}")})

    async def manifest(request: Request, name: str, reference: str) -> Response:
        if request.method == "PUT":
            return await put_manifest(request, name, reference)
        repo = store.repos.get(name) or {"manifests": {}, "tags": {}}
        by_digest = reference.startswith("sha256:")
        if request.method == "DELETE":
            if not by_digest:
                return error(400, ("DIGEST_INVALID", _MISSING))
            if reference not in repo["manifests"]:
                return error(404, ("MANIFEST_UNKNOWN", _MISSING))
            with store.state.lock:
                del repo["manifests"][reference]
                for tag in [t for t, d in repo["tags"].items() if d == reference]:
                    del repo["tags"][tag]
                store.state.save()
            audit.record("delete_manifest", repository=name, digest=reference)
            return Response(status_code=202, headers={**API_HEADER, "Content-Length": "0"})
        if by_digest:
            if not valid_digest(reference):
                return error(400, ("DIGEST_INVALID", {}))
            digest = reference
            if digest not in repo["manifests"]:
                return error(404, ("MANIFEST_UNKNOWN", {"Name": name, "Revision": digest}))
        else:
            digest = repo["tags"].get(reference)
            if digest is None:
                return error(404, ("MANIFEST_UNKNOWN", {"Tag": reference}))
        media_type = repo["manifests"][digest]
        accept = request.headers.get("accept", "")
        if not by_digest and media_type not in accept and not (
                media_type == OCI_MANIFEST and OCI_INDEX in accept):
            return Response(_compact({"errors": [{
                "code": "MANIFEST_UNKNOWN",
                "message": "OCI manifest found, but accept header does not support OCI manifests"}]})
                + "\n", status_code=404, media_type=_JSON, headers=API_HEADER)
        body = store.blob_path(digest).read_bytes()
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body, headers=headers,
                        media_type=media_type)

    def page(request: Request, items: list[str], path: str) -> tuple[list[str], dict[str, str]]:
        last = request.query_params.get("last")
        if last:
            items = [i for i in items if i > last]
        n = request.query_params.get("n", "")
        if not n.isdigit():
            return items, {}
        limit = int(n)
        headers = {}
        if len(items) > limit and limit > 0:
            headers["Link"] = f'<{path}?last={quote(items[limit - 1], safe="")}&n={limit}>; rel="next"'
        return items[:limit], headers

    async def tags(request: Request, name: str) -> Response:
        repo = store.repos.get(name)
        if not repo or not repo["listed"]:
            return error(404, ("NAME_UNKNOWN", {"name": name}))
        names, headers = page(request, sorted(repo["tags"]), f"/v2/{name}/tags/list")
        return Response(_compact({"name": name, "tags": names or None}) + "\n",
                        media_type=_JSON, headers={**API_HEADER, **headers})

    async def catalog(request: Request) -> Response:
        names = sorted(n for n, r in store.repos.items() if r["listed"])
        names, headers = page(request, names, "/v2/_catalog")
        return Response(_compact({"repositories": names}) + "\n", media_type=_JSON,
                        headers={**API_HEADER, **headers})

    async def base(_: Request) -> Response:
        return Response("{}", media_type=_JSON, headers=API_HEADER)

    async def dispatch(request: Request) -> Response:
        rest, method = request.path_params["rest"], request.method
        parts = rest.split("/")
        if rest == "_catalog" and method == "GET":
            return await catalog(request)
        if len(parts) >= 3 and parts[-2:] == ["tags", "list"] and method == "GET":
            return await with_name("/".join(parts[:-2]), lambda n: tags(request, n))
        if len(parts) >= 3 and parts[-2:] == ["blobs", "uploads"] and method == "POST":
            return await with_name("/".join(parts[:-2]), lambda n: start_upload(request, n))
        if len(parts) >= 4 and parts[-3:-1] == ["blobs", "uploads"]:
            name, upload_id = "/".join(parts[:-3]), parts[-1]
            if not upload_id and method == "POST":
                return await with_name(name, lambda n: start_upload(request, n))
            if upload_id and method in ("GET", "PATCH", "PUT", "DELETE"):
                return await with_name(name, lambda n: upload(request, n, upload_id))
        if len(parts) >= 3 and parts[-2] == "blobs" and method in ("GET", "HEAD", "DELETE"):
            return await with_name("/".join(parts[:-2]), lambda n: blob(request, n, parts[-1]))
        if len(parts) >= 3 and parts[-2] == "manifests" and (
                TAG_RE.match(parts[-1]) or DIGEST_RE.match(parts[-1])):
            return await with_name("/".join(parts[:-2]), lambda n: manifest(request, n, parts[-1]))
        return Response("404 page not found\n", status_code=404,
                        media_type="text/plain; charset=utf-8", headers=API_HEADER)

    async def with_name(name: str, handler: Callable[[str], Awaitable[Response]]) -> Response:
        if not valid_repository(name):
            return error(404, ("NAME_INVALID", {"name": name}))
        return await handler(name)

    routes = [
        Route("/v2/", base, methods=["GET", "HEAD"]),
        Route("/v2/{rest:path}", dispatch,
              methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    return Starlette(routes=routes)
