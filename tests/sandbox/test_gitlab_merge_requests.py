"""The GitLab stand-in's merge requests, notes and Merge Request Hook deliveries, driven with
python-gitlab; the hooks are received by a real HTTP server on loopback."""

from __future__ import annotations

from typing import Any, Iterator

import gitlab
import pytest
from gitlab.exceptions import (GitlabCreateError, GitlabGetError, GitlabHttpError, GitlabMRClosedError,
                               GitlabUpdateError)

from sandbox.serve import Sandbox
from tests.helpers import wait_until
from tests.receivers import HttpReceiver
from tests.sandbox.test_gitlab import create_from_template, gitlab_box, gl  # noqa: F401 - fixtures

SECRET = "s3cret-hook-token"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver()
    try:
        yield r
    finally:
        r.close()


def commit_to(project: Any, branch: str, path: str, content: str) -> Any:
    return project.commits.create({"branch": branch, "commit_message": f"Write {path}", "actions": [
        {"action": "create", "file_path": path, "content": content}]})


def mr_events(receiver: HttpReceiver, count: int, iid: int | None = None) -> list[dict[str, Any]]:
    """The first `count` Merge Request Hook payloads (of MR `iid`), waited for with a deadline."""
    def events() -> list[dict[str, Any]] | None:
        with receiver.lock:
            got = [r for r in receiver.received
                   if r.headers.get("X-Gitlab-Event") == "Merge Request Hook"]
        for r in got:
            assert r.headers.get("X-Gitlab-Token") == SECRET
        payloads = [r.json() for r in got]
        payloads = [p for p in payloads if iid is None or p["object_attributes"]["iid"] == iid]
        return payloads if len(payloads) >= count else None
    return wait_until(events, what=f"{count} merge request hook deliveries")


def test_create_list_get_update_close_reopen_and_merge(gl: gitlab.Gitlab) -> None:  # noqa: F811
    project = create_from_template(gl, "mrs")
    base = project.commits.get("main")
    project.branches.create({"branch": "feature", "ref": "main"})
    work = commit_to(project, "feature", "feature.txt", "f\n")

    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Add a feature", "description": "Why: tests"})
    assert (mr.iid, mr.state, mr.sha, mr.project_id) == (1, "opened", work.id, project.id)
    assert mr.author["username"] == "kepler" and mr.web_url.endswith("/demo/mrs/-/merge_requests/1")
    assert mr.merged_at is None and mr.closed_at is None and mr.merge_commit_sha is None
    fetched = project.mergerequests.get(1)
    assert (fetched.id, fetched.title, fetched.description) == (mr.id, "Add a feature", "Why: tests")

    mr.title = "Add the feature"
    mr.save()
    assert project.mergerequests.get(1).title == "Add the feature"
    mr.state_event = "close"
    mr.save()
    closed = project.mergerequests.get(1)
    assert closed.state == "closed" and closed.closed_at is not None
    assert [m.iid for m in project.mergerequests.list(state="closed", get_all=True)] == [1]
    assert project.mergerequests.list(state="opened", get_all=True) == []
    mr.state_event = "reopen"
    mr.save()
    assert project.mergerequests.get(1).state == "opened"
    assert [m.iid for m in project.mergerequests.list(source_branch="feature", get_all=True)] == [1]
    assert project.mergerequests.list(source_branch="other", get_all=True) == []

    mr = project.mergerequests.get(1)
    mr.merge()
    merged = project.mergerequests.get(1)
    assert merged.state == "merged" and merged.merged_at is not None
    assert merged.merge_commit_sha == work.id == project.branches.get("main").commit["id"] != base.id
    assert project.files.raw("feature.txt", ref="main") == b"f\n"
    assert [m.iid for m in project.mergerequests.list(state="merged", get_all=True)] == [1]
    assert [m.iid for m in project.mergerequests.list(state="all", get_all=True)] == [1]


def test_refusals(gl: gitlab.Gitlab) -> None:  # noqa: F811
    project = create_from_template(gl, "refuser")
    project.branches.create({"branch": "feature", "ref": "main"})
    commit_to(project, "feature", "a.txt", "a")
    spec = {"source_branch": "feature", "target_branch": "main", "title": "One"}
    first = project.mergerequests.create(spec)
    with pytest.raises(GitlabCreateError) as duplicate:
        project.mergerequests.create({**spec, "title": "Two"})
    assert duplicate.value.response_code == 409
    assert f"!{first.iid}" in str(duplicate.value.error_message)
    with pytest.raises(GitlabCreateError) as unknown:
        project.mergerequests.create({**spec, "source_branch": "nope"})
    assert unknown.value.response_code == 400 and "source_branch" in str(unknown.value.error_message)
    with pytest.raises(GitlabHttpError) as no_title:  # python-gitlab itself refuses to send it
        gl.http_post(f"/projects/{project.id}/merge_requests",
                     post_data={"source_branch": "feature", "target_branch": "main"})
    assert no_title.value.response_code == 400 and "title is missing" in str(no_title.value)
    with pytest.raises(GitlabGetError) as missing:
        project.mergerequests.get(99)
    assert missing.value.response_code == 404

    first.state_event = "close"
    first.save()
    with pytest.raises(GitlabMRClosedError) as closed:
        first.merge()
    assert closed.value.response_code == 405
    second = project.mergerequests.create({**spec, "title": "Two"})  # the closed one no longer blocks
    with pytest.raises(GitlabUpdateError) as reopen:
        first.state_event = "reopen"
        first.save()
    assert reopen.value.response_code == 409

    commit_to(project, "main", "b.txt", "b")  # the target moved past the source
    with pytest.raises(GitlabMRClosedError) as diverged:
        second.merge()
    assert diverged.value.response_code == 406
    assert project.mergerequests.get(second.iid).state == "opened"


def test_notes_create_list_and_update(gl: gitlab.Gitlab) -> None:  # noqa: F811
    project = create_from_template(gl, "noted")
    project.branches.create({"branch": "feature", "ref": "main"})
    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Notes"})
    first = mr.notes.create({"body": "Looks good"})
    mr.notes.create({"body": "Ship it"})
    assert first.author["username"] == "kepler" and first.noteable_iid == mr.iid
    assert [n.body for n in mr.notes.list(get_all=True)] == ["Ship it", "Looks good"]  # newest first
    note = mr.notes.get(first.id)
    note.body = "Looks great"
    note.save()
    assert mr.notes.get(first.id).body == "Looks great"
    assert project.mergerequests.get(mr.iid).user_notes_count == 2
    with pytest.raises(GitlabCreateError) as empty:
        mr.notes.create({"body": ""})
    assert empty.value.response_code == 400


def test_merge_request_hooks_open_update_merge_close_reopen(gl: gitlab.Gitlab,  # noqa: F811
                                                            receiver: HttpReceiver) -> None:
    project = create_from_template(gl, "hooked")
    project.hooks.create({"url": receiver.url, "push_events": True, "merge_requests_events": True,
                          "token": SECRET})
    project.branches.create({"branch": "feature", "ref": "main"})
    project.branches.create({"branch": "other", "ref": "main"})
    first = commit_to(project, "feature", "one.txt", "1")
    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Hooked"})
    mr_events(receiver, 1, mr.iid)  # the open is delivered before the push that follows
    second = commit_to(project, "feature", "two.txt", "2")
    mr_events(receiver, 2, mr.iid)
    project.mergerequests.get(mr.iid).merge()

    opened, updated, merged = mr_events(receiver, 3, mr.iid)
    assert [p["object_attributes"]["action"] for p in (opened, updated, merged)] == \
        ["open", "update", "merge"]
    for p in (opened, updated, merged):
        assert (p["object_kind"], p["event_type"]) == ("merge_request", "merge_request")
        assert p["project"]["path_with_namespace"] == "demo/hooked"
        assert p["user"]["username"] == "kepler"
        attrs = p["object_attributes"]
        assert (attrs["iid"], attrs["source_branch"], attrs["target_branch"]) == (mr.iid, "feature", "main")
        assert attrs["url"].endswith(f"/demo/hooked/-/merge_requests/{mr.iid}")
    assert opened["object_attributes"]["last_commit"]["id"] == first.id
    assert opened["object_attributes"]["state"] == "opened" and "oldrev" not in opened["object_attributes"]
    assert updated["object_attributes"]["oldrev"] == first.id
    assert updated["object_attributes"]["last_commit"]["id"] == second.id
    assert updated["object_attributes"]["last_commit"]["message"] == "Write two.txt"
    assert merged["object_attributes"]["state"] == "merged"
    assert merged["object_attributes"]["merge_commit_sha"] == second.id

    def main_pushed() -> bool:  # the merge moved main: a Push Hook, as a push to it would be
        with receiver.lock:
            pushes = [r for r in receiver.received if r.headers.get("X-Gitlab-Event") == "Push Hook"]
        return any(r.headers.get("X-Gitlab-Token") == SECRET and r.json()["ref"] == "refs/heads/main"
                   and r.json()["after"] == second.id for r in pushes)
    wait_until(main_pushed, what="the push hook of the merge into main")

    other = project.mergerequests.create({"source_branch": "other", "target_branch": "main",
                                          "title": "Other"})
    mr_events(receiver, 1, other.iid)
    other.title = "Other, renamed"
    other.save()
    mr_events(receiver, 2, other.iid)
    other.state_event = "close"
    other.save()
    mr_events(receiver, 3, other.iid)
    other.state_event = "reopen"
    other.save()
    events = mr_events(receiver, 4, other.iid)
    assert [p["object_attributes"]["action"] for p in events] == ["open", "update", "close", "reopen"]
    assert events[1]["changes"]["title"] == {"previous": "Other", "current": "Other, renamed"}
    assert [p["object_attributes"]["state"] for p in events[2:]] == ["closed", "opened"]
