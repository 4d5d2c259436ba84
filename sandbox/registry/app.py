"""Registry stand-in: the Distribution API v2 subset Kepler and the Jenkins stand-in use.

Status codes, headers and error bodies follow Debian's docker-registry 2.8
(tests/sandbox/test_registry.py runs the same sequence against both):
a POST with `?digest=` opens an upload session (202) like the real one rather
than completing a single-request upload; OCI manifests fetched by tag need an
Accept header naming their media type; invalid repository names get 404.

The routes are the methods of `RegistryApi`; the blobs, manifests and tags it
keeps are a `RegistryStore` (sandbox/registry/store.py).
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.common import Audit
from sandbox.registry.oci import (DIGEST_RE, DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST,
                                  MANIFEST_TYPES, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, TAG_RE,
                                  sha256_digest, valid_digest, valid_repository)
from sandbox.registry.store import RegistryStore
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


def _page(request: Request, items: list[str], path: str) -> tuple[list[str], dict[str, str]]:
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


RepositoryHandler = Callable[[Request, str], Awaitable[Response]]


class RegistryApi:
    """The Distribution API routes of the stand-in, over one `RegistryStore`."""

    def __init__(self, store: RegistryStore, audit: Audit) -> None:
        self.store = store
        self.audit = audit

    def routes(self) -> list[Route]:
        return [
            Route("/v2/", self.base, methods=["GET", "HEAD"]),
            Route("/v2/{rest:path}", self.dispatch,
                  methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    async def dispatch(self, request: Request) -> Response:
        """Route /v2/<name>/... by its tail: a repository name may itself hold slashes."""
        rest, method = request.path_params["rest"], request.method
        if rest == "_catalog" and method == "GET":
            return await self.catalog(request)
        found = self._route(rest.split("/"), method)
        if found is None:
            return Response("404 page not found\n", status_code=404,
                            media_type="text/plain; charset=utf-8", headers=API_HEADER)
        name, handler = found
        if not valid_repository(name):
            return error(404, ("NAME_INVALID", {"name": name}))
        return await handler(request, name)

    def _route(self, parts: list[str], method: str) -> tuple[str, RepositoryHandler] | None:
        """(repository name, handler) for the path segments after /v2/, or None."""
        if len(parts) >= 3 and parts[-2:] == ["tags", "list"] and method == "GET":
            return "/".join(parts[:-2]), self.tags
        if len(parts) >= 3 and parts[-2:] == ["blobs", "uploads"] and method == "POST":
            return "/".join(parts[:-2]), self.start_upload
        if len(parts) >= 4 and parts[-3:-1] == ["blobs", "uploads"]:
            name, upload_id = "/".join(parts[:-3]), parts[-1]
            if not upload_id and method == "POST":
                return name, self.start_upload
            if upload_id and method in ("GET", "PATCH", "PUT", "DELETE"):
                return name, functools.partial(self.upload, upload_id=upload_id)
        if len(parts) >= 3 and parts[-2] == "blobs" and method in ("GET", "HEAD", "DELETE"):
            return "/".join(parts[:-2]), functools.partial(self.blob, digest=parts[-1])
        if len(parts) >= 3 and parts[-2] == "manifests" and (
                TAG_RE.match(parts[-1]) or DIGEST_RE.match(parts[-1])):
            return "/".join(parts[:-2]), functools.partial(self.manifest, reference=parts[-1])
        return None

    # ---- blob uploads -------------------------------------------------------------------

    def _upload_headers(self, request: Request, name: str, upload_id: str) -> dict[str, str]:
        upload = self.store.uploads[upload_id]
        size = upload["size"]
        state = _upload_state(upload_id, size)
        return {**API_HEADER, "Docker-Upload-UUID": upload_id,
                "Location": _location(request, f"/v2/{name}/blobs/uploads/{upload_id}?_state={state}"),
                "Range": f"0-{max(size - 1, 0)}"}

    async def start_upload(self, request: Request, name: str) -> Response:
        mount, source = request.query_params.get("mount"), request.query_params.get("from")
        if mount and source and valid_digest(mount) and self.store.has_blob(source, mount):
            self.store.write_blob(name, self.store.blob_path(mount), mount)
            self.audit.record("mount_blob", repository=name, digest=mount, source=source)
            return Response(status_code=201, headers={
                **API_HEADER, "Docker-Content-Digest": mount, "Content-Length": "0",
                "Location": _location(request, f"/v2/{name}/blobs/{mount}")})
        upload_id = str(uuid.uuid4())
        (self.store.uploads_dir / upload_id).write_bytes(b"")
        self.store.uploads[upload_id] = {"name": name, "size": 0}
        return Response(status_code=202, headers={**self._upload_headers(request, name, upload_id),
                                                  "Content-Length": "0"})

    def _find_upload(self, request: Request, name: str, upload_id: str) -> Response | None:
        state = _read_state(request.query_params.get("_state"))
        if state is None or state.get("uuid") != upload_id:
            return error(404, ("BLOB_UPLOAD_INVALID", {}))
        upload = self.store.uploads.get(upload_id)
        if upload is None or upload["name"] != name:
            return error(404, ("BLOB_UPLOAD_UNKNOWN", {}))
        if state.get("offset") != upload["size"]:
            return error(404, ("BLOB_UPLOAD_INVALID", _MISSING))
        return None

    async def _append(self, upload_id: str, request: Request) -> None:
        data = await request.body()
        with (self.store.uploads_dir / upload_id).open("ab") as f:
            f.write(data)
        self.store.uploads[upload_id]["size"] += len(data)

    async def upload(self, request: Request, name: str, upload_id: str) -> Response:
        problem = self._find_upload(request, name, upload_id)
        if problem is not None:
            return problem
        method = request.method
        if method == "GET":
            return Response(status_code=204, headers=self._upload_headers(request, name, upload_id))
        if method == "DELETE":
            del self.store.uploads[upload_id]
            (self.store.uploads_dir / upload_id).unlink(missing_ok=True)
            return Response(status_code=204, headers={**API_HEADER, "Docker-Upload-UUID": upload_id})
        if method == "PATCH":
            # Like docker-registry 2.8, the Content-Range header is not checked: the
            # `_state` offset in the Location already rejects out-of-order chunks.
            await self._append(upload_id, request)
            return Response(status_code=202, headers={**self._upload_headers(request, name, upload_id),
                                                      "Content-Length": "0"})
        # PUT: the last chunk (maybe empty) and the digest that closes the upload.
        digest = request.query_params.get("digest")
        if not digest:
            return error(400, ("DIGEST_INVALID", "digest missing"))
        if not DIGEST_RE.match(digest) or not valid_digest(digest):
            return error(400, ("DIGEST_INVALID", "digest parsing failed"))
        await self._append(upload_id, request)
        data_file = self.store.uploads_dir / upload_id
        actual = sha256_digest(data_file.read_bytes())
        del self.store.uploads[upload_id]
        if actual != digest:
            data_file.unlink(missing_ok=True)
            return error(400, ("DIGEST_INVALID", {"Digest": digest, "Reason": {}}))
        self.store.write_blob(name, data_file, digest)
        self.audit.record("push_blob", repository=name, digest=digest)
        return Response(status_code=201, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Content-Length": "0",
            "Location": _location(request, f"/v2/{name}/blobs/{digest}")})

    # ---- blobs and manifests ------------------------------------------------------------

    async def blob(self, request: Request, name: str, digest: str) -> Response:
        if not DIGEST_RE.match(digest) or not valid_digest(digest):
            return error(400, ("DIGEST_INVALID", {}))
        if not self.store.has_blob(name, digest):
            return error(404, ("BLOB_UNKNOWN", _MISSING if request.method == "DELETE" else digest))
        if request.method == "DELETE":
            with self.store.state.lock:
                self.store.repos[name]["blobs"].remove(digest)
                self.store.state.save()
            self.audit.record("delete_blob", repository=name, digest=digest)
            return Response(status_code=202, headers={**API_HEADER, "Content-Length": "0"})
        path = self.store.blob_path(digest)
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Accept-Ranges": "bytes", "Cache-Control": "max-age=31536000",
                   "Content-Length": str(path.stat().st_size)}
        body = b"" if request.method == "HEAD" else path.read_bytes()
        return Response(body, headers=headers, media_type="application/octet-stream")

    def _manifest_problems(self, name: str, media_type: str, doc: Any) -> list[tuple[str, Any]]:
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return [("MANIFEST_INVALID", {})]
        if doc.get("mediaType", media_type) != media_type:
            return [("MANIFEST_INVALID", {})]
        if media_type in (OCI_INDEX, DOCKER_LIST):
            children = doc.get("manifests")
            if not isinstance(children, list):
                return [("MANIFEST_INVALID", {})]
            repo = self.store.repos.get(name, {"manifests": {}})
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
            elif not self.store.has_blob(name, digest):
                problems.append(("MANIFEST_BLOB_UNKNOWN", digest))
        return problems

    async def put_manifest(self, request: Request, name: str, reference: str) -> Response:
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
        problems = self._manifest_problems(name, media_type, doc)
        if problems:
            return error(400, *problems)
        (self.store.blob_path(digest)).write_bytes(body)
        with self.store.state.lock:
            repo = self.store.repo(name)
            repo["manifests"][digest] = media_type
            repo["listed"] = True
            if not reference.startswith("sha256:"):
                repo["tags"][reference] = digest
            self.store.state.save()
        self.audit.record("put_manifest", repository=name, reference=reference, digest=digest,
                          media_type=media_type)
        return Response(status_code=201, headers={
            **API_HEADER, "Docker-Content-Digest": digest, "Content-Length": "0",
            "Location": _location(request, f"/v2/{name}/manifests/{digest}")})

    async def manifest(self, request: Request, name: str, reference: str) -> Response:
        if request.method == "PUT":
            return await self.put_manifest(request, name, reference)
        repo = self.store.repos.get(name) or {"manifests": {}, "tags": {}}
        if request.method == "DELETE":
            return self._delete_manifest(repo, name, reference)
        by_digest = reference.startswith("sha256:")
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
        body = self.store.blob_path(digest).read_bytes()
        headers = {**API_HEADER, "Docker-Content-Digest": digest, "ETag": f'"{digest}"',
                   "Content-Length": str(len(body))}
        return Response(b"" if request.method == "HEAD" else body, headers=headers,
                        media_type=media_type)

    def _delete_manifest(self, repo: dict[str, Any], name: str, reference: str) -> Response:
        if not reference.startswith("sha256:"):
            return error(400, ("DIGEST_INVALID", _MISSING))
        if reference not in repo["manifests"]:
            return error(404, ("MANIFEST_UNKNOWN", _MISSING))
        with self.store.state.lock:
            del repo["manifests"][reference]
            for tag in [t for t, d in repo["tags"].items() if d == reference]:
                del repo["tags"][tag]
            self.store.state.save()
        self.audit.record("delete_manifest", repository=name, digest=reference)
        return Response(status_code=202, headers={**API_HEADER, "Content-Length": "0"})

    # ---- listings -----------------------------------------------------------------------

    async def tags(self, request: Request, name: str) -> Response:
        repo = self.store.repos.get(name)
        if not repo or not repo["listed"]:
            return error(404, ("NAME_UNKNOWN", {"name": name}))
        names, headers = _page(request, sorted(repo["tags"]), f"/v2/{name}/tags/list")
        return Response(_compact({"name": name, "tags": names or None}) + "\n",
                        media_type=_JSON, headers={**API_HEADER, **headers})

    async def catalog(self, request: Request) -> Response:
        names = sorted(n for n, r in self.store.repos.items() if r["listed"])
        names, headers = _page(request, names, "/v2/_catalog")
        return Response(_compact({"repositories": names}) + "\n", media_type=_JSON,
                        headers={**API_HEADER, **headers})

    async def base(self, _: Request) -> Response:
        return Response("{}", media_type=_JSON, headers=API_HEADER)


def create_app(world: World) -> Starlette:
    registry = RegistryApi(RegistryStore(world.state_path("registry")), world.audits["registry"])
    return Starlette(routes=registry.routes())
