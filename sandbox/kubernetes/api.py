"""The REST verbs of the Kubernetes stand-in: list/watch, get, create, update, patch,
delete on /api/v1/... and /apis/<group>/<version>/..., plus the scale subresource."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from sandbox.kubernetes import protobuf
from sandbox.kubernetes.discovery import patch_types
from sandbox.kubernetes.patch import APPLY_PATCH, apply_patch
from sandbox.kubernetes.resources import RESOURCES, ApiError, Resource, bad_request, find_resource
from sandbox.kubernetes.schema import check_field_validation
from sandbox.kubernetes.select import parse_field_selector, parse_label_selector
from sandbox.kubernetes.store import Store, Watcher
from sandbox.kubernetes.table import table, wants_table


@dataclass
class Target:
    res: Resource
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_target(group: str, version: str, rest: str) -> Target:
    parts = [p for p in rest.split("/") if p]
    namespace = None
    if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] not in ("status", "finalize"):
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    res = find_resource(group, version, parts[0])
    if res is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if sub is not None and sub not in res.subresources:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if res.namespaced and name is not None and namespace is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return Target(res, version, namespace if res.namespaced else None, name, sub)


def _versioned(obj: dict[str, Any], t: Target) -> dict[str, Any]:
    obj["apiVersion"] = t.res.api_version(t.version)
    return obj


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


async def _body(request: Request) -> Any:
    raw = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media == "application/cbor":
        # Answered like an apiserver without that serializer: clients retry with JSON.
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an "
                       f"unknown format - accepted media types include: application/json, "
                       f"application/yaml, {protobuf.MEDIA_TYPE}")
    if not raw:
        raise bad_request("the request body is empty")
    if media == protobuf.MEDIA_TYPE:
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as e:
            raise ApiError(e.code, e.reason, e.message) from None
    try:
        if "yaml" in request.headers.get("content-type", ""):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"the request body is not valid JSON or YAML: {e}") from None


def _check_accept(accept: str) -> None:
    """Answers are JSON (client-go lists it after protobuf); a client that takes only
    protobuf or CBOR gets a 406, as from an apiserver without that serializer."""
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")} - {""}
    if media and media <= {protobuf.MEDIA_TYPE, "application/cbor"}:
        raise ApiError(406, "NotAcceptable", "only the following media types are accepted: "
                       "application/json")


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join(f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"'
                                 for w in warnings)}


class ResourceApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle(self, request: Request, group: str, version: str, rest: str) -> Response:
        try:
            _check_accept(request.headers.get("accept", ""))
            t = parse_target(group, version, rest)
            method = request.method
            if t.name is None:
                if method == "GET":
                    if _truthy(request.query_params.get("watch")):
                        return self.watch(request, t)
                    return self.list(request, t)
                if method == "POST":
                    return await self.create(request, t)
                if method == "DELETE":
                    return self.delete_collection(request, t)
            else:
                if method == "GET" and t.subresource is None and \
                        wants_table(request.headers.get("accept", "")):
                    return self._table(request, t, [self.store.get(t.res, t.namespace, t.name)])
                if method == "GET":
                    return self.get(t)
                if method == "PUT":
                    return await self.replace(request, t)
                if method == "PATCH":
                    return await self.patch(request, t)
                if method == "DELETE" and t.subresource is None:
                    return await self.delete(request, t)
            raise ApiError(405, "MethodNotAllowed",
                           f"the server does not allow this method on the requested resource")
        except ApiError as e:
            return JSONResponse(e.status(), status_code=e.code)

    def list(self, request: Request, t: Target) -> Response:
        q = request.query_params
        items = self.store.list(t.res, t.namespace, parse_label_selector(q.get("labelSelector")),
                                parse_field_selector(q.get("fieldSelector")))
        if wants_table(request.headers.get("accept", "")):
            return self._table(request, t, items)
        return JSONResponse({"kind": f"{t.res.kind}List", "apiVersion": t.res.api_version(t.version),
                             "metadata": {"resourceVersion": str(self.store.rv)},
                             "items": [_versioned(i, t) for i in items]})

    def _table(self, request: Request, t: Target, items: list[dict[str, Any]]) -> Response:
        doc = table(t.res.kind, [_versioned(i, t) for i in items], str(self.store.rv),
                    request.query_params.get("includeObject"))
        return JSONResponse(doc)

    def watch(self, request: Request, t: Target) -> Response:
        q = request.query_params
        watcher = Watcher(t.res, t.namespace, parse_label_selector(q.get("labelSelector")),
                          parse_field_selector(q.get("fieldSelector")))
        rv = q.get("resourceVersion")
        initial: list[tuple[str, dict[str, Any]]] = []
        gone = False
        # Streaming lists (client-go's WatchListClient, on by default in kubectl 1.37):
        # current objects as ADDED, then a bookmark marking the end of initial events.
        send_initial = _truthy(q.get("sendInitialEvents"))
        if rv in (None, "", "0") or send_initial:
            initial = [("ADDED", o) for o in self.store.list(t.res, t.namespace, watcher.labels,
                                                             watcher.fields)]
        else:
            try:
                since = self.store.events_since(int(rv))
            except ValueError:
                raise bad_request(f"invalid resourceVersion {rv!r}") from None
            if since is None:
                gone = True
            else:
                initial = [(kind, copy.deepcopy(o)) for _, kind, res, o in since
                           if watcher.wants(res, o)]
        listed_rv = self.store.rv
        self.store.watchers.append(watcher)
        timeout = float(q.get("timeoutSeconds") or 1800)

        async def stream() -> AsyncIterator[bytes]:
            try:
                if gone:
                    status = ApiError(410, "Expired", f"too old resource version: {rv} "
                                      f"({self.store.rv})").status()
                    yield (json.dumps({"type": "ERROR", "object": status}) + "\n").encode()
                    return
                for kind, obj in initial:
                    yield _event_line(kind, _versioned(obj, t))
                if send_initial:
                    yield _event_line("BOOKMARK", {
                        "kind": t.res.kind, "apiVersion": t.res.api_version(t.version),
                        "metadata": {"resourceVersion": str(listed_rv),
                                     "annotations": {"k8s.io/initial-events-end": "true"}}})
                deadline = time.monotonic() + timeout
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        kind, obj = await asyncio.wait_for(watcher.queue.get(), min(left, 5.0))
                    except asyncio.TimeoutError:
                        if watcher not in self.store.watchers:
                            return
                        continue
                    yield _event_line(kind, _versioned(copy.deepcopy(obj), t))
            finally:
                if watcher in self.store.watchers:
                    self.store.watchers.remove(watcher)

        return StreamingResponse(stream(), media_type="application/json",
                                 headers={"Transfer-Encoding": "chunked"})

    def get(self, t: Target) -> Response:
        obj = self.store.get(t.res, t.namespace, t.name or "")
        if t.subresource == "scale":
            return JSONResponse(scale_of(obj))
        return JSONResponse(_versioned(obj, t))

    async def create(self, request: Request, t: Target) -> Response:
        obj = await _body(request)
        if not isinstance(obj, dict):
            raise bad_request("the request body must be an object")
        meta = obj.setdefault("metadata", {})
        if t.res.namespaced:
            if meta.get("namespace") not in (None, "", t.namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = t.namespace
        warnings = check_field_validation(t.res, obj, request.query_params.get("fieldValidation"))
        created = self.store.create(t.res, obj)
        return JSONResponse(_versioned(created, t), status_code=201,
                            headers=_warning_headers(warnings))

    async def replace(self, request: Request, t: Target) -> Response:
        obj = await _body(request)
        if not isinstance(obj, dict):
            raise bad_request("the request body must be an object")
        if t.subresource == "scale":
            return self._write_scale(t, obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") not in (None, t.name):
            raise bad_request("the name of the object does not match the name on the URL")
        meta["name"] = t.name
        if t.res.namespaced:
            meta["namespace"] = t.namespace
        warnings = check_field_validation(t.res, obj, request.query_params.get("fieldValidation"))
        updated = self.store.update(t.res, obj, subresource=t.subresource)
        return JSONResponse(_versioned(updated, t), headers=_warning_headers(warnings))

    async def patch(self, request: Request, t: Target) -> Response:
        patch = await _body(request)
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip() not in patch_types(t.res):
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media "
                           f"types include: {', '.join(patch_types(t.res))}")
        if content_type.startswith(APPLY_PATCH) and t.subresource is None and \
                self.store.find(t.res, t.namespace, t.name or "") is None:
            # Server-side apply of a new object creates it (field ownership is not tracked).
            patch.setdefault("metadata", {}).update(name=t.name)
            if t.res.namespaced:
                patch["metadata"]["namespace"] = t.namespace
            created = self.store.create(t.res, patch)
            return JSONResponse(_versioned(created, t), status_code=201)
        current = self.store.get(t.res, t.namespace, t.name or "")
        if t.subresource == "scale":
            return self._write_scale(t, apply_patch(content_type, scale_of(current), patch))
        patched = apply_patch(content_type, current, patch)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not an object")
        meta = patched.setdefault("metadata", {})
        if meta.get("name") != t.name:
            raise bad_request("the name of the object cannot be changed by a patch")
        if meta.get("resourceVersion") == current["metadata"]["resourceVersion"]:
            meta.pop("resourceVersion")  # only a patch that names a resourceVersion is conditional
        if t.res.namespaced:
            meta["namespace"] = t.namespace
        warnings = check_field_validation(t.res, patched,
                                          request.query_params.get("fieldValidation"))
        updated = self.store.update(t.res, patched, subresource=t.subresource, action="patch")
        return JSONResponse(_versioned(updated, t), headers=_warning_headers(warnings))

    def _write_scale(self, t: Target, scale: dict[str, Any]) -> Response:
        obj = self.store.get(t.res, t.namespace, t.name or "")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{t.name}" is invalid: '
                           f"spec.replicas: Invalid value: {replicas}: must be greater than or "
                           "equal to 0")
        obj["spec"]["replicas"] = replicas
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
        obj["metadata"]["resourceVersion"] = wanted_rv or None
        if not wanted_rv:
            obj["metadata"].pop("resourceVersion")
        updated = self.store.update(t.res, obj, action="scale")
        return JSONResponse(scale_of(updated))

    async def delete(self, request: Request, t: Target) -> Response:
        options: dict[str, Any] = {}
        if await request.body():
            options = await _body(request) or {}
            if not isinstance(options, dict):
                raise bad_request("the DeleteOptions body must be an object")
        propagation = (request.query_params.get("propagationPolicy")
                       or options.get("propagationPolicy") or "Background")
        rv = (options.get("preconditions") or {}).get("resourceVersion")
        obj = self.store.delete(t.res, t.namespace, t.name or "", propagation=propagation,
                                precondition_rv=rv)
        if t.res.kind == "PersistentVolumeClaim":  # as the apiserver: the object, being deleted
            return JSONResponse(_versioned(obj, t))
        return JSONResponse(_deleted_status(t.res, obj))

    def delete_collection(self, request: Request, t: Target) -> Response:
        q = request.query_params
        items = self.store.list(t.res, t.namespace, parse_label_selector(q.get("labelSelector")),
                                parse_field_selector(q.get("fieldSelector")))
        for obj in items:
            if self.store.find(t.res, t.namespace, obj["metadata"]["name"]) is not None:
                self.store.delete(t.res, t.namespace, obj["metadata"]["name"])
        return JSONResponse({"kind": "Status", "apiVersion": "v1", "metadata": {},
                             "status": "Success"})


def _event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


def _deleted_status(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": meta["name"], "group": res.group, "kind": res.plural,
                        "uid": meta["uid"]}}


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    match = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": match}}


__all__ = ["ResourceApi", "RESOURCES", "scale_of"]
