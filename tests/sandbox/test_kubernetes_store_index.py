"""The Kubernetes stand-in's store indexes answer exactly what a scan of every object would,
through creates, updates, cascades, namespace deletion and a reload from disk."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sandbox.common import Audit
from sandbox.kubernetes.resources import RESOURCES, Resource, resource_for_kind
from sandbox.kubernetes.store import Store

NS = resource_for_kind("Namespace")
PODS = resource_for_kind("Pod")
RS = resource_for_kind("ReplicaSet")
CM = resource_for_kind("ConfigMap")
ROLES = resource_for_kind("ClusterRole")


def scan(store: Store, res: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
    prefix = f"{res.group}/{res.plural}/"
    if namespace is not None and res.namespaced:
        prefix += f"{namespace}/"
    return [o for k, o in store.objects.items() if k.startswith(prefix)]


def scan_dependants(store: Store, uid: str) -> list[tuple[Resource, dict[str, Any]]]:
    return [(res, o) for res in RESOURCES for o in scan(store, res)
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]


def assert_consistent(store: Store) -> None:
    namespaces = {o["metadata"]["name"] for o in scan(store, NS)} | {"gone", ""}
    for res in RESOURCES:
        assert store.iter(res) == scan(store, res), res.kind
        for ns in namespaces:
            assert store.iter(res, ns) == scan(store, res, ns), (res.kind, ns)
    for obj in store.objects.values():
        uid = obj["metadata"]["uid"]
        assert store._dependants(uid) == scan_dependants(store, uid)
        for res in (PODS, RS, CM):
            for ns in namespaces:
                assert store.owned(res, ns, uid) == [
                    o for o in scan(store, res, ns) if (res, o) in scan_dependants(store, uid)]


def owned(name: str, ns: str, *owners: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "ownerReferences": [
        {"apiVersion": "v1", "kind": o["kind"], "name": o["metadata"]["name"],
         "uid": o["metadata"]["uid"], "controller": i == 0} for i, o in enumerate(owners)]},
        "spec": {"containers": [{"name": "c", "image": "x/y:1"}]}}


def test_indexes_follow_every_write_and_survive_a_reload(tmp_path: Path) -> None:
    store = Store(tmp_path, Audit(None))
    for ns in ("a", "b", "c"):
        store.create(NS, {"metadata": {"name": ns}})
    store.create(ROLES, {"metadata": {"name": "reader"}, "rules": []})
    owner_a = store.create(CM, {"metadata": {"name": "owner", "namespace": "a"}})
    owner_b = store.create(CM, {"metadata": {"name": "owner", "namespace": "b"}})
    for i in range(3):
        store.create(PODS, owned(f"p{i}", "a", owner_a))
        store.create(PODS, owned(f"p{i}", "b", owner_b, owner_a))  # a second, foreign owner
        store.create(PODS, owned(f"p{i}", "c", owner_b))
    assert_consistent(store)

    # An update keeps a key's place; a delete and re-create moves it to the end.
    moved = store.get(PODS, "a", "p0")
    moved["metadata"]["labels"] = {"x": "1"}
    moved["metadata"]["ownerReferences"] = []  # disowned by update
    store.update(PODS, moved)
    store.delete(PODS, "a", "p1")
    store.create(PODS, owned("p1", "a", owner_a))
    assert [p["metadata"]["name"] for p in store.iter(PODS, "a")] == ["p0", "p2", "p1"]
    assert_consistent(store)

    store.delete(CM, "b", "owner", propagation="Orphan")
    assert store._dependants(owner_b["metadata"]["uid"]) == []
    assert_consistent(store)
    store.delete(CM, "a", "owner")  # cascades, also into namespace b
    assert [p["metadata"]["name"] for p in store.iter(PODS, "a")] == ["p0"]
    assert_consistent(store)
    store.delete(NS, None, "c")
    assert store.iter(PODS, "c") == [] and store.index.keys("/pods", "c") == ()
    assert_consistent(store)

    before = copy.deepcopy(store.objects)
    store.save()
    persisted = json.loads((tmp_path / "objects.json").read_text())["objects"]
    assert persisted == before and list(persisted) == list(before)
    reloaded = Store(tmp_path, Audit(None))
    assert_consistent(reloaded)
    assert [o["metadata"]["name"] for o in reloaded.iter(PODS)] == \
        [o["metadata"]["name"] for o in store.iter(PODS)]
    reloaded.create(PODS, owned("late", "b"))
    assert reloaded.iter(PODS, "b")[-1]["metadata"]["name"] == "late"
    assert_consistent(reloaded)
