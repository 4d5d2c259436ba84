"""Discovery and OpenAPI documents for what the Kubernetes stand-in serves.

kubectl asks /api and /apis for the aggregated discovery format first; answering
with the legacy APIVersions/APIGroupList (content type application/json) makes it
fall back to per-group-version APIResourceLists, as against an older apiserver.

`kubectl apply` validates by default: it reads /openapi/v3 and, when the PATCH
operation for the kind lists the `fieldValidation` query parameter, leaves
validation to the server. The per-group-version documents here are minimal but
valid OpenAPI 3.0: every path with its operations and GVK extension, and an
object schema per kind.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.kubernetes.resources import GROUPS, RESOURCES, Resource

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kepler-sandbox",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: tuple[str, ...]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(name, versions) for name, versions in GROUPS.items()]}


def api_group(name: str) -> dict[str, Any] | None:
    if name not in GROUPS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, GROUPS[name])}


def _resources_in(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if r.group == group and version in r.versions]


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    served = _resources_in(group, version)
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for r in served:
        entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular,
                                 "namespaced": r.namespaced, "kind": r.kind, "verbs": VERBS}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                                         "namespaced": r.namespaced, "kind": r.kind,
                                         "verbs": SUBRESOURCE_VERBS}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1", kind="Scale")
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


# -- OpenAPI v3 -----------------------------------------------------------------------

def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _schema_name(r: Resource, version: str) -> str:
    if r.group == "networking.istio.io":
        return f"io.istio.networking.{version}.{r.kind}"
    group = r.group.split(".")[0] if r.group else "core"
    return f"io.k8s.api.{group}.{version}.{r.kind}"


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": {"type": "string", "uniqueItems": True}}


def _op(r: Resource, version: str, action: str, ref: str | None,
        params: list[dict[str, Any]] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{action}{r.kind}",
        "tags": [_gv_path(r.group, version).replace("/", "_")],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": version,
                                            "kind": r.kind},
        "responses": {"200": {"description": "OK"}},
    }
    if ref:
        op["responses"]["200"]["content"] = {"application/json": {"schema": {"$ref": ref}}}
    if params:
        op["parameters"] = list(params)
    return op


def patch_types(r: Resource) -> list[str]:
    """Custom resources (Istio's) take no strategic merge patch, as with a real CRD."""
    types = ["application/json-patch+json", "application/merge-patch+json",
             "application/apply-patch+yaml"]
    if r.group != "networking.istio.io":
        types.insert(2, "application/strategic-merge-patch+json")
    return types


def _paths_for(r: Resource, version: str) -> dict[str, Any]:
    base = "/" + _gv_path(r.group, version)
    collection = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced \
        else f"{base}/{r.plural}"
    item = f"{collection}/{{name}}"
    ref = f"#/components/schemas/{_schema_name(r, version)}"
    ns = [_param("namespace", "path")] if r.namespaced else []
    writes = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
    body = {"content": {"application/json": {"schema": {"$ref": ref}}}, "required": True}
    patch_body = {"content": {t: {"schema": {"type": "object"}} for t in patch_types(r)},
                  "required": True}
    paths = {
        collection: {
            "get": _op(r, version, "list", None, [_param("labelSelector"),
                                                  _param("fieldSelector"), _param("watch")]),
            "post": {**_op(r, version, "post", ref, writes), "requestBody": body},
            "parameters": ns,
        },
        item: {
            "get": _op(r, version, "get", ref),
            "put": {**_op(r, version, "put", ref, writes), "requestBody": body},
            "patch": {**_op(r, version, "patch", ref, writes + [_param("force")]),
                      "requestBody": patch_body},
            "delete": _op(r, version, "delete", None),
            "parameters": [_param("name", "path")] + ns + [_param("pretty")],
        },
    }
    return paths


def _schema_for(r: Resource, version: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{r.kind} ({'Kepler sandbox: minimal schema'})",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object",
                         "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        # No x-kubernetes-group-version-kind here on purpose: kubectl apply would then
        # build strategic merge patches from this minimal schema (and warn that it
        # cannot); without it kubectl uses its compiled-in types, as it does for v2.
        "x-kubernetes-preserve-unknown-fields": True,
    }


def openapi_v3_document(group: str, version: str) -> dict[str, Any] | None:
    served = _resources_in(group, version)
    if not served:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    for r in served:
        paths.update(_paths_for(r, version))
        schemas[_schema_name(r, version)] = _schema_for(r, version)
    return {"openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": schemas}}


def _all_group_versions() -> list[tuple[str, str]]:
    gvs = [("", "v1")]
    gvs += [(g, v) for g, versions in GROUPS.items() for v in versions]
    return gvs


def openapi_v3_root() -> dict[str, Any]:
    paths = {}
    for group, version in _all_group_versions():
        doc = json.dumps(openapi_v3_document(group, version), sort_keys=True)
        digest = hashlib.sha512(doc.encode()).hexdigest()[:32].upper()
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}
