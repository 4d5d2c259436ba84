"""GitLab, through python-gitlab: projects from templates, the service spec, refs, and a
merge request's state and Kepler's one note on it (previews)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, Iterator

import gitlab
import requests
import yaml
from gitlab.v4.objects import Project
from gitlab.utils import EncodedId
from pydantic import ValidationError
from temporalio import activity

from activities.http_clients import PerThread
from activities.http_retry import retrying_session
from activities.errors import non_retryable, raise_for_status, retryable
from kepler.spec import SPEC_PATH, ServiceSpec
from kepler.settings import Platform, Secrets
from kepler.payloads import (
    Commit, EnsureHook, EnsureProject, ExistingService, ProjectRef, ReadSpec, ResolveRef,
    UndoCreated,
)
from kepler.previews import NOTE_MARKER, MergeRequestQuery, MergeRequestState, PreviewNote
from kepler.validation import describe_validation_error


def created_marker(run_id: str) -> str:
    return f"created-by-run {run_id}"


@contextlib.contextmanager
def gitlab_errors(what: str) -> Iterator[None]:
    try:
        yield
    except gitlab.exceptions.GitlabError as e:
        raise_for_status(e.response_code, what, str(e.error_message))
    except (requests.ConnectionError, requests.Timeout) as e:
        raise retryable(f"{what}: GitLab unreachable: {type(e).__name__}") from None


class GitLabActivities:
    def __init__(self, platform: Platform, secrets: Secrets) -> None:
        self.config = platform.gitlab
        self._token = secrets.gitlab_token
        self._clients = PerThread(self._new_client)
        self._username: str | None = None  # the token's user, once asked (preview notes)

    def _new_client(self) -> gitlab.Gitlab:
        return gitlab.Gitlab(self.config.url, private_token=self._token.get_secret_value(),
                             timeout=15, keep_base_url=True, session=retrying_session())

    def client(self) -> gitlab.Gitlab:
        return self._clients.get()

    def _path(self, service: str) -> str:
        return f"{self.config.group}/{service}"

    def _get(self, service: str, path: str, what: str, **kwargs: Any) -> Any | None:
        """GET a path under the service's project in one request (python-gitlab's HTTP
        layer: building a Project object costs more CPU than the call). None when the
        object does not exist; a missing project is NotFound, non-retryable."""
        project = self._path(service)
        with gitlab_errors(what):
            try:
                return self.client().http_get(f"/projects/{EncodedId(project)}/{path}",
                                              **kwargs)
            except gitlab.exceptions.GitlabHttpError as e:
                if e.response_code == 404 and "Project" in str(e.error_message):
                    raise non_retryable("NotFound", f"GitLab project {project} does not "
                                        "exist: create the service first") from None
                if e.response_code == 404:
                    return None
                raise

    @activity.defn(name="gitlab.ensure_project")
    def ensure_project(self, req: EnsureProject) -> ProjectRef:
        """Adopt the project if it exists, else create it from the template; then make
        sure it holds the service spec and a Dockerfile."""
        gl = self.client()
        path = self._path(req.service)
        created = False
        with gitlab_errors(f"adopt or create {path}"):
            try:
                project = gl.projects.get(path)
            except gitlab.exceptions.GitlabGetError as e:
                if e.response_code != 404:
                    raise
                group = gl.groups.get(self.config.group)
                templates = gl.groups.get(self.config.templates_group)
                project = gl.projects.create({
                    "name": req.service, "path": req.service, "namespace_id": group.id,
                    "use_custom_template": True, "template_name": req.template,
                    "group_with_project_templates_id": templates.id,
                    "description": f"Managed by Kepler ({created_marker(req.run_id)})",
                })
                created = True
            self._ensure_files(gl, project, req)
        return ProjectRef(project_id=project.id, path=project.path_with_namespace,
                          http_url=project.http_url_to_repo, created=created)

    def _ensure_files(self, gl: gitlab.Gitlab, project: Project, req: EnsureProject) -> None:
        branch = project.default_branch or "main"
        actions = []
        current = self._read(project, SPEC_PATH, branch)
        if current != req.spec_yaml:
            actions.append({"action": "update" if current is not None else "create",
                            "file_path": SPEC_PATH, "content": req.spec_yaml})
        if self._read(project, "Dockerfile", branch) is None:
            if req.template == "custom":
                raise non_retryable("InvalidInput", "template custom: the repository has no "
                                    "Dockerfile; commit one first")
            template = gl.projects.get(f"{self.config.templates_group}/{req.template}")
            dockerfile = self._read(template, "Dockerfile", template.default_branch or "main")
            if dockerfile is None:
                raise non_retryable("NotFound", f"template {req.template} has no Dockerfile")
            actions.append({"action": "create", "file_path": "Dockerfile", "content": dockerfile})
        if actions:  # the marker lets an undo find this commit (revert_files)
            project.commits.create({"branch": branch, "actions": actions, "commit_message":
                                    f"Kepler: service spec ({created_marker(req.run_id)})"})

    def _project_or_none(self, service: str) -> Project | None:
        try:
            return self.client().projects.get(self._path(service))
        except gitlab.exceptions.GitlabGetError as e:
            if e.response_code == 404:
                return None
            raise

    @staticmethod
    def _read(project: Project, path: str, ref: str) -> str | None:
        try:
            return project.files.get(file_path=path, ref=ref).decode().decode()
        except gitlab.exceptions.GitlabGetError as e:
            if e.response_code == 404:
                return None
            raise

    @activity.defn(name="gitlab.revert_files")
    def revert_files(self, undo: UndoCreated) -> bool:
        """Undo ensure_project's commit to an adopted project: each file it wrote goes back
        to what it was before (deleted if it did not exist), unless changed since."""
        with gitlab_errors(f"put back the files of {self._path(undo.service)}"):
            project = self._project_or_none(undo.service)
            if project is None:
                return False
            if created_marker(undo.run_id) in (project.description or ""):
                return False  # created by this run: its undo deletes the whole project
            branch = project.default_branch or "main"
            ours = next((c for c in project.commits.list(ref_name=branch, per_page=50, get_all=False)
                         if created_marker(undo.run_id) in c.message), None)
            if ours is None:
                return False
            parent = ours.parent_ids[0] if ours.parent_ids else None
            actions = []
            for path in (SPEC_PATH, "Dockerfile"):
                wrote = self._read(project, path, ours.id)
                before = self._read(project, path, parent) if parent else None
                if wrote == before:
                    continue
                if self._read(project, path, branch) != wrote:
                    raise non_retryable("Changed", f"{path} changed since Kepler's commit "
                                        f"{ours.short_id}: left as it is")
                actions.append({"action": "delete", "file_path": path} if before is None else
                               {"action": "update", "file_path": path, "content": before})
            if actions:
                project.commits.create({"branch": branch, "actions": actions, "commit_message":
                                        f"Kepler: undo of the service spec commit {ours.short_id}"})
            return bool(actions)

    @activity.defn(name="gitlab.delete_project_if_created")
    def delete_project_if_created(self, undo: UndoCreated) -> bool:
        with gitlab_errors(f"delete {self._path(undo.service)}"):
            project = self._project_or_none(undo.service)
            if project is None:
                return False
            if created_marker(undo.run_id) not in (project.description or ""):
                return False  # adopted, or created by someone else: never ours to delete
            project.delete()
            return True

    @activity.defn(name="gitlab.ensure_hook")
    def ensure_hook(self, req: EnsureHook) -> str:
        """Add the push webhook (gitlab.webhook_url in kepler.yaml) unless it is there."""
        url = self.config.webhook_url
        if not url:
            return "no webhook_url configured"
        with gitlab_errors(f"webhook on project {req.project_id}"):
            project = self.client().projects.get(req.project_id)
            if any(h.url == url for h in project.hooks.list(get_all=True)):
                return "already present"
            project.hooks.create({"url": url, "push_events": True, "tag_push_events": True})
            return "added"

    @activity.defn(name="gitlab.remove_hook")
    def remove_hook(self, req: EnsureHook) -> bool:
        """Undo of ensure_hook when it added Kepler's webhook: remove that hook, no other."""
        url = self.config.webhook_url
        if not url:
            return False
        with gitlab_errors(f"webhook on project {req.project_id}"):
            try:
                project = self.client().projects.get(req.project_id)
            except gitlab.exceptions.GitlabGetError as e:
                if e.response_code == 404:
                    return False  # the project is gone (deleted by the undo after this one)
                raise
            hooks = [h for h in project.hooks.list(get_all=True) if h.url == url]
            for hook in hooks:
                hook.delete()
            return bool(hooks)

    @activity.defn(name="gitlab.resolve_ref")
    def resolve_ref(self, req: ResolveRef) -> Commit:
        commit = self._get(req.service, f"repository/commits/{EncodedId(req.ref)}",
                           f"resolve {req.ref!r} in {self._path(req.service)}")
        if commit is None:
            raise non_retryable("NotFound", f"ref {req.ref!r} does not exist in "
                                f"{self._path(req.service)}")
        if not isinstance(commit, dict):  # not JSON: a proxy's page, say
            raise retryable(f"resolve {req.ref!r}: GitLab answered without JSON")
        return Commit(sha=commit["id"], short_id=commit["short_id"], title=commit.get("title", ""),
                      committed_at=_committed_at(commit))

    @activity.defn(name="gitlab.read_spec")
    def read_spec(self, req: ReadSpec) -> ServiceSpec:
        raw = self._get(req.service, f"repository/files/{EncodedId(SPEC_PATH)}/raw",
                        f"read {SPEC_PATH} at {req.sha[:12]}", query_data={"ref": req.sha},
                        raw=True)
        if raw is None:
            raise non_retryable("NotFound", f"{SPEC_PATH} is missing at {req.sha[:12]}: "
                                "create the service with kepler service create")
        text = raw.content.decode()
        try:
            return ServiceSpec.model_validate(yaml.safe_load(text))
        except (ValidationError, yaml.YAMLError) as e:
            detail = describe_validation_error(e) if isinstance(e, ValidationError) else str(e)
            raise non_retryable("InvalidInput", f"{SPEC_PATH} at {req.sha[:12]}: {detail}") from None

    @activity.defn(name="gitlab.existing_service")
    def existing_service(self, service: str) -> ExistingService | None:
        """The service's project if it exists, with the owners its spec names (none: a
        project Kepler did not make)."""
        with gitlab_errors(f"look up {self._path(service)}"):
            project = self._project_or_none(service)
            if project is None:
                return None
            text = self._read(project, SPEC_PATH, project.default_branch or "main") or ""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            data = {}
        data = data if isinstance(data, dict) else {}
        owners = data.get("owners") if isinstance(data.get("owners"), list) else []
        return ExistingService(path=project.path_with_namespace, team=str(data.get("team") or ""),
                               owners=[str(o) for o in owners])

    @activity.defn(name="gitlab.archive_project")
    def archive_project(self, service: str) -> None:
        with gitlab_errors(f"archive {self._path(service)}"):
            project = self.client().projects.get(self._path(service))
            if not project.archived:
                project.archive()

    @activity.defn(name="gitlab.merge_request")
    def merge_request(self, q: MergeRequestQuery) -> MergeRequestState:
        """Merge request `q.mr` of the service's project as GitLab says it now."""
        what = f"read merge request !{q.mr} of {self._path(q.service)}"
        mr = self._get(q.service, f"merge_requests/{q.mr}", what)
        if mr is None:
            raise non_retryable("NotFound", f"merge request !{q.mr} does not exist in "
                                f"{self._path(q.service)}")
        if not isinstance(mr, dict):
            raise retryable(f"{what}: GitLab answered without JSON")
        if not mr.get("sha"):  # GitLab fills it in once it has prepared the diff
            raise retryable(f"{what}: GitLab has no head commit for it yet")
        return MergeRequestState(
            iid=mr["iid"], state=mr["state"], sha=mr["sha"], source_branch=mr["source_branch"],
            title=str(mr.get("title") or "")[:255],
            author=str((mr.get("author") or {}).get("username") or "")[:255],
            same_project=mr.get("source_project_id") == mr.get("target_project_id"))

    @activity.defn(name="gitlab.preview_note")
    def preview_note(self, n: PreviewNote) -> int:
        """Kepler's one note on the merge request, updated in place or else created; the
        note is found again by NOTE_MARKER, so a retry after a lost answer updates the note
        it created instead of adding a second one."""
        body = f"{NOTE_MARKER}\n{n.body}"
        with gitlab_errors(f"note on merge request !{n.mr} of {self._path(n.service)}"):
            project = self.client().projects.get(self._path(n.service), lazy=True)
            notes = project.mergerequests.get(n.mr, lazy=True).notes
            me = self._token_username()
            ours = [note for note in notes.list(get_all=True, sort="asc", order_by="created_at")
                    if NOTE_MARKER in (note.body or "") and not getattr(note, "system", False)
                    and (not me or (getattr(note, "author", None) or {}).get("username") == me)]
            if not ours:
                return int(notes.create({"body": body}).id)
            note = ours[0]  # the oldest: where people have seen it
            if note.body != body:
                notes.update(note.id, {"body": body})
            return int(note.id)

    def _token_username(self) -> str:
        """The token's user: only its notes are Kepler's (someone quoting Kepler's note
        copies the marker, and another user's note could not be edited anyway)."""
        if self._username is None:
            user = self.client().http_get("/user")
            self._username = str(user.get("username") or "") if isinstance(user, dict) else ""
        return self._username


def _committed_at(commit: dict[str, Any]) -> datetime | None:
    """GitLab's committed_date, when it is a time with its offset (only kepler metrics
    reads it: a release never fails over it)."""
    try:
        at = datetime.fromisoformat(str(commit.get("committed_date") or ""))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None
