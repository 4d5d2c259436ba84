"""GitLab stand-in state: namespaces, projects and their git-like history.

Blobs are keyed by git's own blob id (sha1 of "blob <size>\\0<content>"); a
commit is a full snapshot {path: blob id} plus parents, and its id is a sha1
over tree, parents, author, date and message, so ids look and behave like git's.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from sandbox.common import StateStore
from sandbox.gitlab.templates import TEMPLATES

USER = {"id": 1, "username": "kepler", "name": "Kepler Sandbox", "email": "kepler@sandbox.local",
        "state": "active"}
TEMPLATE_GROUP = "kepler-templates"
DEMO_GROUP = "demo"
SEED_DATE = "2024-01-01T00:00:00.000Z"

PATH_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$")
NAME_RE = re.compile(r"^[\w][\w .+-]*$")
PATH_RULE = ("can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', "
             "end in '.git' or end in '.atom'")
NAME_RULE = ("can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. "
             "It must start with a letter, digit, emoji, or '_'.")
REF_RE = re.compile(r"^(?!/)(?!.*(?:\.\.|//|@\{|\\))(?!.*(?:/|\.lock|\.)$)[^\x00-\x20~^:?*\[\x7f]+$")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def path_problem(path: str) -> str | None:
    if not PATH_RE.match(path) or path.endswith((".git", ".atom")) or len(path) > 255:
        return PATH_RULE
    return None


def blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class GitLabStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.lock = state.lock
        self._by_path: dict[str, str] = {}  # a project's path (lower case) -> its id, a hint
        if not state.data.get("namespaces"):
            self._seed()

    # ---- namespaces and projects -------------------------------------------------

    @property
    def data(self) -> dict[str, Any]:
        return self.state.data

    def next_id(self, kind: str) -> int:
        counters = self.data.setdefault("next_id", {})
        counters[kind] = counters.get(kind, 0) + 1
        return counters[kind]

    def namespaces(self) -> list[dict[str, Any]]:
        return sorted(self.data["namespaces"].values(), key=lambda n: n["id"])

    def namespace(self, ref: str | int) -> dict[str, Any] | None:
        text = str(ref)
        if text.isdigit():
            return self.data["namespaces"].get(text)
        return next((n for n in self.data["namespaces"].values()
                     if n["full_path"].lower() == text.lower()), None)

    def projects(self) -> list[dict[str, Any]]:
        return sorted(self.data["projects"].values(), key=lambda p: p["id"])

    def project(self, ref: str | int) -> dict[str, Any] | None:
        text = str(ref)
        projects = self.data["projects"]
        if text.isdigit():
            return projects.get(text)
        path = text.lower()
        cached = projects.get(self._by_path.get(path, ""))  # checked: a project may move
        if cached is not None and cached["path_with_namespace"].lower() == path:
            return cached
        found = next((p for p in projects.values() if p["path_with_namespace"].lower() == path), None)
        if found is not None:
            self._by_path[path] = str(found["id"])
        return found

    def add_namespace(self, name: str, path: str, kind: str = "group") -> dict[str, Any]:
        ns_id = self.next_id("namespace")
        ns = {"id": ns_id, "name": name, "path": path, "kind": kind, "full_path": path,
              "full_name": name, "parent_id": None, "description": "", "visibility": "internal",
              "created_at": SEED_DATE}
        self.data["namespaces"][str(ns_id)] = ns
        return ns

    def add_project(self, namespace: dict[str, Any], name: str, path: str, description: str = "",
                    default_branch: str = "main", visibility: str = "private") -> dict[str, Any]:
        project_id = self.next_id("project")
        created = now_iso()
        project = {
            "id": project_id, "name": name, "path": path, "description": description,
            "path_with_namespace": f"{namespace['full_path']}/{path}",
            "name_with_namespace": f"{namespace['full_name']} / {name}",
            "namespace_id": namespace["id"], "default_branch": default_branch,
            "visibility": visibility, "archived": False, "created_at": created,
            "last_activity_at": created, "commits": {}, "branches": {}, "tags": {}, "hooks": {},
        }
        self.data["projects"][str(project_id)] = project
        return project

    def taken(self, namespace: dict[str, Any], name: str, path: str) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for p in self.data["projects"].values():
            if p["namespace_id"] != namespace["id"]:
                continue
            if p["name"].lower() == name.lower():
                errors["name"] = ["has already been taken"]
                errors["project_namespace.name"] = ["has already been taken"]
            if p["path"].lower() == path.lower():
                errors["path"] = ["has already been taken"]
        return errors

    # ---- blobs and commits -----------------------------------------------------

    def put_blob(self, content: bytes) -> str:
        key = blob_id(content)
        self.data["blobs"].setdefault(key, base64.b64encode(content).decode())
        return key

    def blob(self, key: str) -> bytes:
        return base64.b64decode(self.data["blobs"][key])

    def commit(self, project: dict[str, Any], ref: str) -> dict[str, Any] | None:
        """Resolve a branch, tag, full or short (>= 7 hex) sha to a commit."""
        if ref in project["branches"]:
            return project["commits"][project["branches"][ref]]
        if ref in project["tags"]:
            return project["commits"][project["tags"][ref]["target"]]
        if ref in project["commits"]:
            return project["commits"][ref]
        if re.fullmatch(r"[0-9a-f]{7,39}", ref):
            matches = [c for sha, c in project["commits"].items() if sha.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
        return None

    def files(self, commit: dict[str, Any]) -> dict[str, bytes]:
        return {path: self.blob(key) for path, key in commit["tree"].items()}

    def add_commit(self, project: dict[str, Any], branch: str, tree: dict[str, str], message: str,
                   parent: dict[str, Any] | None, author_name: str = USER["name"],
                   author_email: str = USER["email"], date: str | None = None) -> dict[str, Any]:
        date = date or now_iso()
        parent_ids = [parent["id"]] if parent else []
        tree_id = hashlib.sha1("".join(f"{p}\0{b}\n" for p, b in sorted(tree.items())).encode()).hexdigest()
        header = f"tree {tree_id}\n" + "".join(f"parent {p}\n" for p in parent_ids)
        header += f"author {author_name} <{author_email}> {date}\n\n{message}"
        sha = hashlib.sha1(header.encode()).hexdigest()
        commit = {
            "id": sha, "short_id": sha[:8], "title": message.split("\n", 1)[0], "message": message,
            "author_name": author_name, "author_email": author_email, "authored_date": date,
            "committer_name": author_name, "committer_email": author_email, "committed_date": date,
            "created_at": date, "parent_ids": parent_ids, "tree": dict(sorted(tree.items())),
        }
        project["commits"][sha] = commit
        project["branches"][branch] = sha
        project["last_activity_at"] = now_iso()
        return commit

    def history(self, project: dict[str, Any], start: dict[str, Any]) -> list[dict[str, Any]]:
        out, current = [], start
        while current is not None:
            out.append(current)
            parents = current["parent_ids"]
            current = project["commits"].get(parents[0]) if parents else None
        return out

    # ---- seed ----------------------------------------------------------------

    def _seed(self) -> None:
        self.data.update({"namespaces": {}, "projects": {}, "blobs": {}, "next_id": {}})
        self.add_namespace(USER["name"], USER["username"], kind="user")
        templates = self.add_namespace("Kepler templates", TEMPLATE_GROUP)
        self.add_namespace("Demo", DEMO_GROUP)
        for name, files in TEMPLATES.items():
            project = self.add_project(templates, name, name, f"Kepler {name} service template",
                                       visibility="internal")
            project["created_at"] = project["last_activity_at"] = SEED_DATE
            tree = {path: self.put_blob(content.encode()) for path, content in files.items()}
            self.add_commit(project, "main", tree, f"Initial {name} template", None, date=SEED_DATE)
        self.state.save()
