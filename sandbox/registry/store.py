"""Registry stand-in state: blobs as files under the state dir; repositories, manifests
and tags in a StateStore document; upload sessions in memory."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from sandbox.common import StateStore


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
