"""The three patch formats the apiserver accepts: JSON merge (RFC 7386), strategic
merge (lists of named things merged by key), and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kubernetes.resources import ApiError, bad_request

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# Field name -> merge key, as the Kubernetes types declare `patchMergeKey`.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "hostAliases": "ip", "conditions": "type", "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
}
# Lists of scalars merged as sets.
SET_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in SET_LISTS:
        return current + [v for v in patch if v not in current]
    key = _merge_key(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return [copy.deepcopy(i) for i in patch]
    result = [copy.deepcopy(i) for i in current]
    for item in patch:
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        index = next((n for n, c in enumerate(result)
                      if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_index(part, node, path)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an "
                           f"error in our request: path {path!r} does not exist")
    return node


def _index(part: str, node: list[Any], path: str, allow_end: bool = False) -> int:
    if allow_end and part == "-":
        return len(node)
    try:
        i = int(part)
    except ValueError:
        raise bad_request(f"invalid array index {part!r} in {path!r}") from None
    if i < 0 or i > len(node) or (i == len(node) and not allow_end):
        raise ApiError(422, "Invalid", f"array index {i} out of bounds in {path!r}")
    return i


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        return parent[_index(parts[-1], parent, path)]
    if parts[-1] not in parent:
        raise ApiError(422, "Invalid", f"path {path!r} does not exist")
    return parent[parts[-1]]


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        return parent.pop(_index(parts[-1], parent, path))
    if parts[-1] not in parent:
        raise ApiError(422, "Invalid", f"unable to remove nonexistent key: {parts[-1]}")
    return parent.pop(parts[-1])


def _add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _parent(doc, parts, path)
    if isinstance(parent, list):
        i = _index(parts[-1], parent, path, allow_end=not replace)
        if replace:
            parent[i] = copy.deepcopy(value)
        else:
            parent.insert(i, copy.deepcopy(value))
    else:
        if replace and parts[-1] not in parent:
            raise ApiError(422, "Invalid", f"replace operation does not apply: doc is "
                           f"missing key: {path}")
        parent[parts[-1]] = copy.deepcopy(value)
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "replace":
            doc = _add(doc, path, op.get("value"), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, op["from"]))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        else:
            raise bad_request(f"unexpected json patch operation: {kind!r}")
    return doc


def apply_patch(content_type: str, current: dict[str, Any], patch: Any) -> dict[str, Any]:
    media = content_type.split(";")[0].strip()
    if media == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise bad_request("merge patch must be a JSON object")
        return merge_patch(current, patch)
    if media == STRATEGIC_PATCH:
        if not isinstance(patch, dict):
            raise bad_request("strategic merge patch must be a JSON object")
        return strategic_merge_patch(current, patch) or {}
    if media == APPLY_PATCH:
        # Server-side apply without managedFields: the applied config merges like a
        # strategic merge patch (fields it omits are kept, not removed).
        if not isinstance(patch, dict):
            raise bad_request("an apply configuration must be an object")
        return strategic_merge_patch(current, patch) or {}
    if media == JSON_PATCH:
        return json_patch(current, patch)
    raise ApiError(415, "UnsupportedMediaType",
                   f"the body of the request was in an unknown format - accepted media "
                   f"types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_PATCH}, "
                   f"{APPLY_PATCH}")
