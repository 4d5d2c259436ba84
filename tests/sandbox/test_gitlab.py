"""The GitLab stand-in, driven with python-gitlab as Kepler's activities drive GitLab."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path
from typing import Iterator

import gitlab
import httpx
import pytest
from gitlab.exceptions import GitlabAuthenticationError, GitlabCreateError, GitlabGetError, GitlabHttpError

from sandbox.serve import Sandbox
from sandbox.world import SandboxSettings


@pytest.fixture
def gitlab_box(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(SandboxSettings(state_dir=tmp_path, standins=("gitlab",))).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def gl(gitlab_box: Sandbox) -> gitlab.Gitlab:
    return gitlab.Gitlab(gitlab_box.urls["gitlab"], private_token=gitlab_box.settings.gitlab_token,
                         retry_transient_errors=False)


def create_from_template(gl: gitlab.Gitlab, name: str, template: str = "python"):
    templates = gl.groups.get("kepler-templates")
    demo = gl.groups.get("demo")
    return gl.projects.create({"name": name, "path": name, "namespace_id": demo.id,
                               "use_custom_template": True, "template_name": template,
                               "group_with_project_templates_id": templates.id})


def test_seeded_groups_and_templates(gl: gitlab.Gitlab) -> None:
    groups = {g.full_path for g in gl.groups.list(get_all=True)}
    assert {"kepler-templates", "demo"} <= groups
    templates = gl.groups.get("kepler-templates").projects.list(get_all=True)
    assert sorted(p.path for p in templates) == ["go", "python", "static"]
    for name in ("go", "python", "static"):
        files = {t["path"] for t in gl.projects.get(f"kepler-templates/{name}").repository_tree(get_all=True)}
        assert "Dockerfile" in files and len(files) >= 2
    assert {n.full_path for n in gl.namespaces.list(get_all=True)} >= {"kepler", "demo"}


def test_create_project_from_template_and_commit(gl: gitlab.Gitlab) -> None:
    project = create_from_template(gl, "svc")
    assert project.path_with_namespace == "demo/svc"
    assert project.http_url_to_repo.endswith("/demo/svc.git")
    assert gl.projects.get("demo/svc").id == project.id == gl.projects.get(project.id).id
    dockerfile = project.files.get("Dockerfile", ref="main")
    assert b"FROM python" in base64.b64decode(dockerfile.content)
    first = project.commits.list(get_all=True)
    assert len(first) == 1 and len(first[0].id) == 40 and first[0].parent_ids == []

    commit = project.commits.create({"branch": "main", "commit_message": "Make it flaky", "actions": [
        {"action": "create", "file_path": "kepler-sandbox.yaml", "content": "error_rate: 0.2\n"},
        {"action": "update", "file_path": "app.py",
         "content": base64.b64encode(b"print('v2')\n").decode(), "encoding": "base64"},
    ]})
    assert commit.parent_ids == [first[0].id] and commit.id != first[0].id
    # A ref resolves to a commit by branch, full sha and short sha.
    for ref in ("main", commit.id, commit.id[:8]):
        assert project.commits.get(ref).id == commit.id
    assert project.files.raw("app.py", ref=commit.id) == b"print('v2')\n"
    assert project.files.raw("app.py", ref=first[0].id) != b"print('v2')\n"

    project.files.create({"file_path": "docs/notes.md", "branch": "main", "content": "hi",
                          "commit_message": "notes"})
    f = project.files.get("docs/notes.md", ref="main")
    f.content = "hello"
    f.save(branch="main", commit_message="edit notes")
    assert project.files.raw("docs/notes.md", ref="main") == b"hello"
    with pytest.raises(GitlabCreateError) as exists:
        project.files.create({"file_path": "docs/notes.md", "branch": "main", "content": "x",
                              "commit_message": "again"})
    assert exists.value.response_code == 400


def test_branches_tags_archive_and_hooks(gl: gitlab.Gitlab) -> None:
    project = create_from_template(gl, "brancher", "go")
    head = project.commits.get("main")
    project.branches.create({"branch": "feature", "ref": "main"})
    project.commits.create({"branch": "feature", "commit_message": "feature work", "actions": [
        {"action": "create", "file_path": "feature.txt", "content": "f"}]})
    assert {b.name for b in project.branches.list(get_all=True)} == {"main", "feature"}
    tag = project.tags.create({"tag_name": "v1.0.0", "ref": "feature"})
    assert project.commits.get("v1.0.0").id == tag.commit["id"] != head.id
    with pytest.raises(GitlabCreateError):
        project.branches.create({"branch": "feature", "ref": "main"})
    with pytest.raises(GitlabGetError):
        project.branches.get("nope")

    archive = project.repository_archive(sha="v1.0.0")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames()}
    assert {"Dockerfile", "main.go", "feature.txt"} <= names

    hook = project.hooks.create({"url": "http://127.0.0.1:9/hook", "push_events": True})
    assert [h.id for h in project.hooks.list(get_all=True)] == [hook.id]
    project.hooks.delete(hook.id)
    assert project.hooks.list(get_all=True) == []
    with pytest.raises(GitlabCreateError) as bad:
        project.hooks.create({"url": "not a url"})
    assert bad.value.response_code == 422


def test_validation_conflicts_and_not_found(gl: gitlab.Gitlab, gitlab_box: Sandbox) -> None:
    create_from_template(gl, "taken", "static")
    with pytest.raises(GitlabCreateError) as taken:
        create_from_template(gl, "taken", "static")
    assert taken.value.response_code == 400
    assert "has already been taken" in str(taken.value.error_message)
    with pytest.raises(GitlabCreateError) as bad_path:
        gl.projects.create({"name": "x", "path": "-bad.git", "namespace_id": gl.groups.get("demo").id})
    assert bad_path.value.response_code == 400 and "path" in bad_path.value.error_message
    with pytest.raises(GitlabCreateError):
        create_from_template(gl, "other", "cobol")
    with pytest.raises(GitlabGetError) as missing:
        gl.projects.get("demo/missing")
    assert missing.value.response_code == 404 and missing.value.error_message == "404 Project Not Found"

    anonymous = gitlab.Gitlab(gitlab_box.urls["gitlab"], private_token="wrong")
    with pytest.raises(GitlabAuthenticationError):
        anonymous.projects.get("demo/taken")
    bearer = httpx.get(f"{gitlab_box.urls['gitlab']}/api/v4/projects/demo%2Ftaken",
                       headers={"Authorization": f"Bearer {gitlab_box.settings.gitlab_token}"})
    assert bearer.status_code == 200
    unauthenticated = httpx.get(f"{gitlab_box.urls['gitlab']}/api/v4/projects")
    assert (unauthenticated.status_code, unauthenticated.json()) == (401, {"message": "401 Unauthorized"})


def test_pagination_headers(gl: gitlab.Gitlab, gitlab_box: Sandbox) -> None:
    r = httpx.get(f"{gitlab_box.urls['gitlab']}/api/v4/projects", params={"per_page": 2, "page": 1},
                  headers={"PRIVATE-TOKEN": gitlab_box.settings.gitlab_token})
    assert r.headers["x-total"] == "3" and r.headers["x-total-pages"] == "2"
    assert r.headers["x-next-page"] == "2" and 'rel="next"' in r.headers["link"]
    assert len(r.json()) == 2
    assert len(gl.projects.list(per_page=1, get_all=True)) == 3  # python-gitlab follows Link


def test_archive_unarchive_delete_and_restart(tmp_path: Path) -> None:
    settings = SandboxSettings(state_dir=tmp_path, standins=("gitlab",))
    box = Sandbox(settings).start()
    gl = gitlab.Gitlab(box.urls["gitlab"], private_token=settings.gitlab_token)
    project = create_from_template(gl, "keeper")
    sha = project.commits.get("main").id
    project.archive()
    assert gl.projects.get(project.id).archived
    with pytest.raises(GitlabCreateError) as read_only:
        project.commits.create({"branch": "main", "commit_message": "x", "actions": [
            {"action": "create", "file_path": "x", "content": "x"}]})
    assert read_only.value.response_code == 403
    project.unarchive()
    doomed = create_from_template(gl, "doomed")
    doomed.delete()
    box.stop()

    box = Sandbox(settings).start()
    try:
        gl = gitlab.Gitlab(box.urls["gitlab"], private_token=settings.gitlab_token)
        again = gl.projects.get("demo/keeper")
        assert not again.archived and again.commits.get("main").id == sha
        with pytest.raises(GitlabGetError):
            gl.projects.get("demo/doomed")
        actions = [e["action"] for e in box.world.audits["gitlab"].entries]
        assert actions.count("create_project") == 2 and "delete_project" in actions
    finally:
        box.stop()


def test_injected_fault_then_retry(gl: gitlab.Gitlab, gitlab_box: Sandbox) -> None:
    url = gitlab_box.urls["gitlab"]
    httpx.post(f"{url}/_sandbox/faults", json={"path": "/projects/demo/flaky$", "status": 503,
                                               "count": 1}).raise_for_status()
    create_from_template(gl, "flaky")
    with pytest.raises(GitlabGetError) as unavailable:
        gl.projects.get("demo/flaky")
    assert unavailable.value.response_code == 503
    assert gl.projects.get("demo/flaky").path == "flaky"
    # python-gitlab's own retry of transient errors gets through a second 503.
    httpx.post(f"{url}/_sandbox/faults", json={"path": "/projects/demo/flaky$", "status": 503,
                                               "count": 1}).raise_for_status()
    patient = gitlab.Gitlab(url, private_token=gitlab_box.settings.gitlab_token,
                            retry_transient_errors=True)
    assert patient.projects.get("demo/flaky").path == "flaky"
    httpx.post(f"{url}/_sandbox/faults", json={"path": "/projects/demo/flaky$", "drop": True}).raise_for_status()
    with pytest.raises((GitlabHttpError, gitlab.exceptions.GitlabConnectionError, Exception)):
        gl.projects.get("demo/flaky")
    assert gl.projects.get("demo/flaky").path == "flaky"


def test_compare_lists_the_commits_between_and_each_files_diff(gl: gitlab.Gitlab) -> None:
    project = create_from_template(gl, "cmp")
    base = project.commits.list(get_all=True)[0]
    first = project.commits.create({"branch": "main", "commit_message": "Add config", "actions": [
        {"action": "create", "file_path": "config/app.yaml", "content": "level: info\n"}]})
    second = project.commits.create({"branch": "main", "commit_message": "Louder", "actions": [
        {"action": "update", "file_path": "config/app.yaml", "content": "level: debug\n"}]})
    compared = project.repository_compare(base.id, "main")
    assert [c["id"] for c in compared["commits"]] == [first.id, second.id]  # oldest first
    (diff,) = compared["diffs"]
    assert (diff["new_path"], diff["new_file"], diff["deleted_file"]) == ("config/app.yaml", True, False)
    assert "+level: debug" in diff["diff"] and diff["diff"].startswith("@@")
    assert project.repository_compare(second.id, second.id)["commits"] == []
    assert project.repository_compare(second.id, base.id)["commits"] == []  # nothing new in base
    with pytest.raises(GitlabGetError):
        project.repository_compare("nope", "main")
