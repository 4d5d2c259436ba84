"""The preview's GitLab activities against the GitLab stand-in: a merge request's state
(gitlab.merge_request) and Kepler's one note on it (gitlab.preview_note)."""

from __future__ import annotations

from typing import Any

import gitlab
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.gitlab import GitLabActivities
from kepler.previews import NOTE_MARKER, MergeRequestQuery, PreviewNote
from kepler.settings import Platform, Secrets, parse_platform
from sandbox.serve import Sandbox
from tests.conftest import platform_yaml
from tests.helpers import sandbox_fixture
from tests.sandbox.test_gitlab import create_from_template
from tests.sandbox.test_gitlab_merge_requests import commit_to

box = sandbox_fixture("mr-acts", standins=("gitlab",))
UNUSED = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def platform(box: Sandbox) -> Platform:
    urls = {"jenkins": UNUSED, "registry": UNUSED, **box.urls}
    return parse_platform(platform_yaml(urls, "127.0.0.1:1", "unused"))


@pytest.fixture(scope="module")
def gl(box: Sandbox) -> gitlab.Gitlab:
    return gitlab.Gitlab(box.urls["gitlab"], private_token=box.settings.gitlab_token,
                         retry_transient_errors=False)


@pytest.fixture(scope="module")
def acts(platform: Platform) -> GitLabActivities:
    return GitLabActivities(platform, Secrets())


def run(fn, *args):  # noqa: ANN001, ANN202 - thin wrapper over the SDK's test harness
    return ActivityEnvironment().run(fn, *args)


def open_mr(gl: gitlab.Gitlab, service: str, branch: str = "feature") -> tuple[Any, Any, Any]:
    """A project `demo/<service>` with an open merge request from `branch`: the project,
    the merge request and its head commit."""
    project = create_from_template(gl, service)
    project.branches.create({"branch": branch, "ref": "main"})
    head = commit_to(project, branch, f"{branch}.txt", "x\n")
    mr = project.mergerequests.create({"source_branch": branch, "target_branch": "main",
                                       "title": "Add the feature"})
    return project, mr, head


def test_reads_an_open_then_a_merged_merge_request(gl: gitlab.Gitlab,
                                                   acts: GitLabActivities) -> None:
    project, mr, head = open_mr(gl, "reader")
    state = run(acts.merge_request, MergeRequestQuery(service="reader", mr=mr.iid))
    assert (state.iid, state.state, state.sha, state.source_branch) == \
        (mr.iid, "opened", head.id, "feature")
    assert (state.title, state.author, state.same_project) == ("Add the feature", "kepler", True)

    pushed = commit_to(project, "feature", "more.txt", "y\n")  # a push moves the head
    assert run(acts.merge_request, MergeRequestQuery(service="reader", mr=mr.iid)).sha == pushed.id
    project.mergerequests.get(mr.iid).merge()
    merged = run(acts.merge_request, MergeRequestQuery(service="reader", mr=mr.iid))
    assert (merged.state, merged.sha) == ("merged", pushed.id)

    closing = project.mergerequests.create({"source_branch": "main", "target_branch": "feature",
                                            "title": "Back"})
    closing.state_event = "close"
    closing.save()
    assert run(acts.merge_request, MergeRequestQuery(service="reader", mr=closing.iid)).state == \
        "closed"


def test_a_missing_merge_request_or_project_is_not_found(gl: gitlab.Gitlab,
                                                        acts: GitLabActivities) -> None:
    open_mr(gl, "lonely")
    for query, words in ((MergeRequestQuery(service="lonely", mr=99), "!99 does not exist"),
                         (MergeRequestQuery(service="nowhere", mr=1), "demo/nowhere does not exist")):
        with pytest.raises(ApplicationError) as e:
            run(acts.merge_request, query)
        assert (e.value.type, e.value.non_retryable) == ("NotFound", True)
        assert words in str(e.value)
    with pytest.raises(ApplicationError) as e:
        run(acts.preview_note, PreviewNote(service="lonely", mr=99, body="hi"))
    assert (e.value.type, e.value.non_retryable) == ("NotFound", True)


def test_one_note_created_then_updated_in_place(gl: gitlab.Gitlab, acts: GitLabActivities) -> None:
    project, mr, _ = open_mr(gl, "noted")
    mr.notes.create({"body": "Looks good"})
    first = run(acts.preview_note, PreviewNote(service="noted", mr=mr.iid, body="Deploying abc"))
    mr.notes.create({"body": "Ship it"})
    assert run(acts.preview_note, PreviewNote(service="noted", mr=mr.iid,
                                              body="Deploying abc")) == first  # a retry
    second = run(acts.preview_note, PreviewNote(service="noted", mr=mr.iid,
                                                body="Live at http://x"))
    assert second == first

    notes = {n.id: n.body for n in project.mergerequests.get(mr.iid).notes.list(get_all=True)}
    ours = [i for i, body in notes.items() if NOTE_MARKER in body]
    assert ours == [first]
    assert notes[first] == f"{NOTE_MARKER}\nLive at http://x"
    assert sorted(b for i, b in notes.items() if i != first) == ["Looks good", "Ship it"]

    _, other, _ = open_mr(gl, "noted2")  # another merge request gets a note of its own
    elsewhere = run(acts.preview_note, PreviewNote(service="noted2", mr=other.iid, body="b"))
    assert elsewhere != first
    assert project.mergerequests.get(mr.iid).notes.get(first).body.endswith("Live at http://x")
