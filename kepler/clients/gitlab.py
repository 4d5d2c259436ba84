"""Reading a service's GitLab project for people (the console's approval page): what
changed between two commits, and the spec at a commit. Read-only, with python-gitlab; the
worker's GitLab I/O is activities/gitlab.py."""

from __future__ import annotations

import gitlab
import yaml
from pydantic import Field, ValidationError

from kepler.settings import Platform, Secrets
from kepler.spec import SPEC_PATH, ServiceSpec
from kepler.workloads import Model

MAX_COMMITS = 100
MAX_DIFF = 20_000  # characters of one file's diff shown


class CommitLine(Model):
    sha: str
    title: str
    author: str = ""
    at: str = ""


class FileDiff(Model):
    path: str
    diff: str
    new: bool = False
    deleted: bool = False
    truncated: bool = False


class Comparison(Model):
    commits: list[CommitLine] = Field(default_factory=list)  # oldest first
    diffs: list[FileDiff] = Field(default_factory=list)
    more_commits: int = 0


class GitLabReader:
    def __init__(self, platform: Platform, secrets: Secrets) -> None:
        self._group = platform.gitlab.group
        self._gl = gitlab.Gitlab(platform.gitlab.url, timeout=15, keep_base_url=True,
                                 private_token=secrets.gitlab_token.get_secret_value())

    def _project(self, service: str):  # type: ignore[no-untyped-def]
        return self._gl.projects.get(f"{self._group}/{service}", lazy=True)

    def compare(self, service: str, older: str, newer: str) -> Comparison:
        """The commits in `newer` and not in `older`, and each changed file's diff."""
        data = self._project(service).repository_compare(older, newer)
        commits = [CommitLine(sha=c["id"], title=c.get("title", ""), author=c.get("author_name", ""),
                              at=c.get("committed_date", "")) for c in data.get("commits") or []]
        diffs = [FileDiff(path=d.get("new_path") or d.get("old_path", ""),
                          diff=(d.get("diff") or "")[:MAX_DIFF], new=bool(d.get("new_file")),
                          deleted=bool(d.get("deleted_file")),
                          truncated=len(d.get("diff") or "") > MAX_DIFF)
                 for d in data.get("diffs") or []]
        diffs.sort(key=lambda d: (d.path != SPEC_PATH, d.path))  # the config first
        return Comparison(commits=commits[-MAX_COMMITS:], diffs=diffs,
                          more_commits=max(0, len(commits) - MAX_COMMITS))

    def spec_at(self, service: str, sha: str) -> ServiceSpec | None:
        """The service's spec at `sha` (None when it is missing or broken)."""
        try:
            raw = self._project(service).files.raw(file_path=SPEC_PATH, ref=sha)
            return ServiceSpec.model_validate(yaml.safe_load(raw))
        except (gitlab.exceptions.GitlabError, ValidationError, yaml.YAMLError):
            return None
