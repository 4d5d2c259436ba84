"""Issue 26, item 7: `service create` of a new name takes over nothing it did not make.
Objects in its namespaces without Kepler's mark of the service (someone else's Service,
HPA, ...) stop the create with exit 3 naming each, before any change anywhere (its GitLab
project and Jenkins job are not made either); a platform admin's signed `--adopt` may
take them over; a namespace that exists is used, never changed. Through the CLI, the real
dev server and worker, and the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jenkins
import pytest
import yaml
from kubernetes import client as k8s

from sandbox.serve import Sandbox
from tests import world
from tests.e2e.test_release import core, gitlab_client, kepler
from tests.helpers import keep_history

pytestmark = pytest.mark.e2e


def theirs(sandbox: Sandbox, service: str) -> None:
    """The payments team's namespace in prod with a Service of the service's name, and
    a ServiceAccount of that name in staging: none of it Kepler's."""
    for env in ("prod", "staging"):
        core(sandbox).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(
            name=f"{service}-{env}", labels={"team": "payments"})))
    core(sandbox).create_namespaced_service(f"{service}-prod", k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name=service, labels={"owner": "payments"}),
        spec=k8s.V1ServiceSpec(selector={"app": "legacy"}, ports=[k8s.V1ServicePort(port=9000)])))
    core(sandbox).create_namespaced_service_account(f"{service}-staging", k8s.V1ServiceAccount(
        metadata=k8s.V1ObjectMeta(name=service, labels={"owner": "payments"})))


def jobs(sandbox: Sandbox) -> list[str]:
    s = sandbox.settings
    server = jenkins.Jenkins(sandbox.urls["jenkins"], username=s.jenkins_user, password=s.jenkins_token)
    return sorted(j["name"] for j in server.get_jobs())


def projects(sandbox: Sandbox) -> list[str]:
    return sorted(p.path for p in gitlab_client(sandbox).projects.list(get_all=True))


@pytest.mark.parametrize("user,flags,refusal", [
    ("carol", [], "objects Kepler did not create are in the way"),
    ("alice", [], "objects Kepler did not create are in the way"),  # an admin must say so
    ("carol", ["--adopt"], "adopt: only a platform admin (alice) may take over objects"),
])
async def test_create_over_objects_it_did_not_make_is_refused_and_changes_nothing(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path,
        user: str, flags: list[str], refusal: str) -> None:
    service = f"legacy{len(flags)}{user[0]}"
    theirs(sandbox, service)
    namespaces = [f"{service}-prod", f"{service}-staging"]
    before = world.snapshot(sandbox, namespaces)
    jobs_before, projects_before = jobs(sandbox), projects(sandbox)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": service, "team": "growth",
                                                        "owners": [user]}))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch", *flags, user=user)
    assert code == 3, out + err
    assert refusal in err
    assert f"Service {service}-prod/{service} in prod" in err
    assert f"ServiceAccount {service}-staging/{service} in staging" in err
    assert world.differences(before, world.snapshot(sandbox, namespaces)) == []
    assert jobs(sandbox) == jobs_before and projects(sandbox) == projects_before


async def test_an_admin_adopts_with_adopt_and_the_namespace_stays_theirs(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, dev_env: Any, tmp_path: Path) -> None:
    theirs(sandbox, "legacyadm")
    ns_before = core(sandbox).read_namespace("legacyadm-prod").metadata
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"name": "legacyadm", "team": "growth",
                                                        "owners": ["carol"]}))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch", "--adopt", user="alice")
    assert code == 0, out + err
    svc = core(sandbox).read_namespaced_service("legacyadm", "legacyadm-prod")
    assert svc.spec.selector == {"app": "legacyadm"}  # brought up to date...
    assert "app.kubernetes.io/managed-by" not in (svc.metadata.labels or {})  # ...never Kepler's
    ns = core(sandbox).read_namespace("legacyadm-prod").metadata
    assert ns.labels == ns_before.labels and ns.resource_version == ns_before.resource_version
    status = json.loads((await kepler(platform_file, "status", "legacyadm", "--env", "all",
                                      "-o", "json"))[1])
    assert any("adopted by alice (--adopt): Service legacyadm-prod/legacyadm in prod" in n
               for n in status["notes"]), status["notes"]
    await keep_history(dev_env.client, "create-adopted-by-an-admin", "legacyadm@all")


async def test_create_over_its_own_service_by_an_owner_still_brings_it_up_to_date(
        sandbox: Sandbox, platform_file: Path, e2e_worker: Any, tmp_path: Path) -> None:
    spec = {"name": "again", "team": "growth", "owners": ["carol"], "port": 8080}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert (await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                         "--watch", user="carol"))[0] == 0
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**spec, "port": 9090}))
    code, out, err = await kepler(platform_file, "service", "create", "-f", str(tmp_path / "spec.yaml"),
                                  "--watch", user="carol")
    assert code == 0, out + err
    assert core(sandbox).read_namespaced_service("again", "again-prod").spec.ports[0].target_port == 9090
