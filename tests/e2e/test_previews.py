"""Preview environments end to end: the GitLab stand-in's own Merge Request Hook deliveries to
the receiver (`kepler preview hooks`), the real worker on the dev server, the sandbox's
Kubernetes, Jenkins and registry, and `kepler preview list|show|stop`. Each push is deployed
in the merge request's own namespace and said in one note on it; a close, a stop and the
cap each tear exactly that namespace down; the environment's own objects never change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from kubernetes import client as k8s

from kepler.settings import load_platform
from sandbox.serve import Sandbox
from starter.preview_hooks import create_app
from tests.cli.test_preview_hooks import PATH, TOKEN, secrets, serving
from tests.e2e.test_canary_mirror import create_and_release
from tests.e2e.test_release import apps, gitlab_client, kepler, wait_for_outcome
from tests.sandbox.test_gitlab_merge_requests import commit_to
from tests.workers import wait_for, worker_with

pytestmark = pytest.mark.e2e


@pytest.fixture
async def previews(sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A platform with previews in staging (at most 2 per service), its worker, and the
    receiver on loopback: (the platform file, the hook URL)."""
    def on(config: dict[str, Any]) -> None:
        config["previews"] = {"env": "staging", "max_per_service": 2, "ttl": "1h"}

    async with worker_with(sandbox, dev_env, tmp_path, f"previews-{tmp_path.name}", on) as path:
        with serving(create_app(load_platform(path), secrets())) as base:
            yield path, f"{base}{PATH}"


def core(sandbox: Sandbox) -> k8s.CoreV1Api:
    conf = k8s.Configuration()
    conf.host = sandbox.urls["kubernetes"]
    return k8s.CoreV1Api(k8s.ApiClient(conf))


def namespaces(sandbox: Sandbox, prefix: str) -> set[str]:
    return {n.metadata.name for n in core(sandbox).list_namespace().items
            if n.metadata.name.startswith(prefix) and not n.metadata.deletion_timestamp}


def kepler_notes(mr: Any) -> list[str]:
    return [n.body for n in mr.notes.list(get_all=True) if "kepler-preview" in n.body]


async def listed(path: Path, service: str = "kite") -> dict[int, dict[str, Any]]:
    code, out, err = await kepler(path, "preview", "list", service, "-o", "json")
    assert code == 0, out + err
    return {row["mr"]: row for row in json.loads(out)}


def environment_objects(sandbox: Sandbox) -> list[tuple[str, str, int]]:
    return [(d.metadata.name, d.spec.template.spec.containers[0].image, d.metadata.generation)
            for d in apps(sandbox).list_namespaced_deployment("kite-staging").items]


async def test_a_merge_request_gets_a_preview_updated_on_push_and_removed_on_close(
        sandbox: Sandbox, previews: tuple[Path, str], tmp_path: Path) -> None:
    path, url = previews
    await create_and_release(path, tmp_path, {"name": "kite", "team": "t", "replicas": 1,
                                              "config_files": {"app.conf": "x=1\n"}})
    before = environment_objects(sandbox)
    project = gitlab_client(sandbox).projects.get("demo/kite")
    project.hooks.create({"url": url, "merge_requests_events": True, "token": TOKEN})
    project.branches.create({"branch": "feature", "ref": "main"})
    commit_to(project, "feature", "one.txt", "1")
    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Try the new checkout"})
    ns = f"kite-staging-mr-{mr.iid}"

    async def deployed(sha: str) -> bool:
        row = (await listed(path)).get(mr.iid)
        return bool(row and row["stage"] == "live" and sha.startswith(row["deployed"]))

    await wait_for(lambda: deployed(project.mergerequests.get(mr.iid).sha), 120, "the preview")
    image = apps(sandbox).read_namespaced_deployment("kite", ns).spec.template.spec.containers[0].image
    assert "@sha256:" in image
    [note] = kepler_notes(project.mergerequests.get(mr.iid))
    assert f"is up: http://kite.{ns}.svc.cluster.local" in note

    second = commit_to(project, "feature", "two.txt", "2")  # a push: the hook says update
    await wait_for(lambda: deployed(second.id), 120, "the push deployed")
    assert apps(sandbox).read_namespaced_deployment("kite", ns).spec.template.spec.containers[0].image != image
    [note] = kepler_notes(project.mergerequests.get(mr.iid))  # the same note, updated in place
    assert f"Preview of {second.id[:12]} is up" in note
    code, out, _ = await kepler(path, "preview", "show", "kite", "--mr", str(mr.iid), "-o", "json")
    assert code == 0 and json.loads(out)["url"] == f"http://kite.{ns}.svc.cluster.local"

    mr.state_event = "close"
    mr.save()
    await wait_for(lambda: ns not in namespaces(sandbox, "kite-"), 120, "the namespace deleted")
    async def gone() -> bool:
        return mr.iid not in await listed(path)

    await wait_for(gone, 60, "the preview gone from the list")
    await wait_for(lambda: kepler_notes(project.mergerequests.get(mr.iid)) == [
        "<!-- kepler-preview -->\nPreview removed: the merge request was closed."], 30,
        "the close said on the merge request")
    assert environment_objects(sandbox) == before  # the environment's own never changed


async def test_stop_and_the_cap_each_remove_exactly_one_preview(
        sandbox: Sandbox, previews: tuple[Path, str], tmp_path: Path) -> None:
    path, url = previews
    await create_and_release(path, tmp_path, {"name": "kestrel", "team": "t", "replicas": 1})
    project = gitlab_client(sandbox).projects.get("demo/kestrel")
    project.hooks.create({"url": url, "merge_requests_events": True, "token": TOKEN})
    mrs = []
    for n in range(3):  # the cap is 2: the third makes room by removing the oldest idle one
        project.branches.create({"branch": f"f{n}", "ref": "main"})
        commit_to(project, f"f{n}", f"f{n}.txt", str(n))
        mrs.append(project.mergerequests.create({"source_branch": f"f{n}", "target_branch": "main",
                                                 "title": f"feature {n}"}))

        async def live(iid: int = mrs[-1].iid) -> bool:
            row = (await listed(path, "kestrel")).get(iid)
            return bool(row and row["stage"] == "live")

        await wait_for(live, 120, f"preview of !{mrs[-1].iid}")
    async def room_made() -> bool:
        return set(await listed(path, "kestrel")) == {mrs[1].iid, mrs[2].iid}

    await wait_for(room_made, 60, "room made")
    await wait_for(lambda: namespaces(sandbox, "kestrel-staging-mr-") == {
        f"kestrel-staging-mr-{mrs[1].iid}", f"kestrel-staging-mr-{mrs[2].iid}"}, 60, "the oldest removed")
    await wait_for(lambda: kepler_notes(project.mergerequests.get(mrs[0].iid)) == [
        "<!-- kepler-preview -->\nPreview removed: made room for a newer preview (at most 2 of "
        "kestrel at once)."], 30, "the eviction said on the merge request")

    code, out, err = await kepler(path, "preview", "stop", "kestrel", "--mr", str(mrs[1].iid))
    assert code == 0, out + err
    await wait_for(lambda: namespaces(sandbox, "kestrel-staging-mr-") == {
        f"kestrel-staging-mr-{mrs[2].iid}"}, 60, "the stopped one removed")
    await wait_for(lambda: kepler_notes(project.mergerequests.get(mrs[1].iid)) == [
        "<!-- kepler-preview -->\nPreview removed: stopped (kepler preview stop)."], 30,
        "the stop said on the merge request")
    code, out, err = await kepler(path, "preview", "stop", "kestrel", "--mr", "999")
    assert code == 3 and "no preview of kestrel !999" in out + err


@pytest.fixture
async def header_previews(sandbox: Sandbox, dev_env: Any, tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    def on(config: dict[str, Any]) -> None:
        config["previews"] = {"env": "staging", "mode": "header"}

    async with worker_with(sandbox, dev_env, tmp_path, f"hpreviews-{tmp_path.name}", on) as path:
        with serving(create_app(load_platform(path), secrets())) as base:
            yield path, f"{base}{PATH}"


async def test_a_header_preview_lives_beside_the_service_and_leaves_its_routes_alone(
        sandbox: Sandbox, header_previews: tuple[Path, str], tmp_path: Path) -> None:
    """Header mode: the preview's objects `heron-mr-<iid>` in heron-staging and its own route
    (x-preview: mr-<iid>) first in heron's VirtualService; a canary meanwhile rewrites the
    live routes and keeps it; the close removes exactly the preview's objects and route."""
    from tests.e2e.test_canary import routes_of

    path, url = header_previews
    await create_and_release(path, tmp_path, {"name": "heron", "team": "t", "replicas": 1})
    live_before = environment_deployments(sandbox, "heron-staging")
    project = gitlab_client(sandbox).projects.get("demo/heron")
    project.hooks.create({"url": url, "merge_requests_events": True, "token": TOKEN})
    project.branches.create({"branch": "feature", "ref": "main"})
    commit_to(project, "feature", "one.txt", "1")
    mr = project.mergerequests.create({"source_branch": "feature", "target_branch": "main",
                                       "title": "Header preview"})
    name = f"heron-mr-{mr.iid}"

    async def live() -> bool:
        row = (await listed(path, "heron")).get(mr.iid)
        return bool(row and row["stage"] == "live")

    await wait_for(live, 120, "the header preview")
    d = apps(sandbox).read_namespaced_deployment(name, "heron-staging")
    assert d.spec.template.metadata.labels["app"] == name  # heron's own Service never selects it
    http = routes_of(sandbox, "heron-staging", "heron")
    assert http[0]["name"] == f"preview-mr-{mr.iid}"
    assert http[0]["match"] == [{"headers": {"x-preview": {"exact": f"mr-{mr.iid}"}}}]
    assert http[0]["route"] == [{"destination": {"host": name}}]
    assert [r["name"] for r in http[1:]] == ["primary"]
    [note] = kepler_notes(project.mergerequests.get(mr.iid))
    assert f"with the header x-preview: mr-{mr.iid}" in note

    code, out, err = await kepler(path, "canary", "heron", "--env", "staging", "--ref", "main",
                                  "--steps", "50", "--interval", "1m")
    assert code == 0, out + err

    def canary_routed() -> bool:
        return any(r.get("name") == "canary-testers" for r in routes_of(sandbox, "heron-staging", "heron"))

    await wait_for(canary_routed, 120, "the canary's routes")
    assert routes_of(sandbox, "heron-staging", "heron")[0]["name"] == f"preview-mr-{mr.iid}"
    code, out, err = await kepler(path, "abort", "heron", "--env", "staging")
    assert code == 0, out + err
    await wait_for_outcome(path, "heron", "staging")

    mr.state_event = "close"
    mr.save()

    def removed() -> bool:
        names = {d.metadata.name for d in apps(sandbox).list_namespaced_deployment("heron-staging").items}
        names |= {s.metadata.name for s in core(sandbox).list_namespaced_service("heron-staging").items}
        return name not in names and not any(
            r.get("name", "").startswith("preview-") for r in routes_of(sandbox, "heron-staging", "heron"))

    await wait_for(removed, 60, "the preview's objects and route removed")
    assert [r["name"] for r in routes_of(sandbox, "heron-staging", "heron")] == ["primary"]
    assert {s.metadata.name for s in core(sandbox).list_namespaced_service("heron-staging").items} == {"heron"}
    # the service's own Deployment as it was (the aborted canary's, scaled to 0, is the canary's)
    assert environment_deployments(sandbox, "heron-staging")["heron"] == live_before["heron"]


def environment_deployments(sandbox: Sandbox, namespace: str) -> dict[str, str]:
    """The environment's own Deployments (not a preview's) and their images."""
    return {d.metadata.name: d.spec.template.spec.containers[0].image
            for d in apps(sandbox).list_namespaced_deployment(namespace).items
            if "-mr-" not in d.metadata.name}
