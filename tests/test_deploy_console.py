"""deploy/ runs the console beside the worker: in the kustomize overlays (its own Deployment,
Service and account, bound to a read-only ClusterRole) and in the compose file (the same
kepler.yaml and identity files as the worker, writing only the passkeys file). The worker's
manifests are tests/test_deploy.py's."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from deploy import rbac, rbac_console
from kepler.settings import parse_platform
from tests.test_deploy import DEPLOY, OVERLAYS, ROOT, one, render

PORT = 8480
LISTEN = ["console", "--listen", f"0.0.0.0:{PORT}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_a_hardened_console_on_the_workers_config(overlay: str) -> None:
    objects = render(overlay)
    worker = one(objects, "Deployment", "kepler-worker")["spec"]["template"]["spec"]
    deploy = one(objects, "Deployment", "kepler-console")
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deploy["spec"]["replicas"] == 1  # sign-in challenges are remembered per process
    assert pod["serviceAccountName"] == "kepler-console" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == worker["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == worker["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert container["image"] == worker["containers"][0]["image"]
    assert container["args"] == LISTEN
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/login", "port": "http"}
    assert set(container["resources"]) == {"requests", "limits"}

    # the same kepler.yaml as the worker, read-only
    volumes = {v["name"]: v for v in pod["volumes"]}
    worker_volumes = {v["name"]: v for v in worker["volumes"]}
    assert volumes["config"] == worker_volumes["config"]
    assert {"name": "config", "mountPath": "/etc/kepler", "readOnly": True} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    worker_env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    assert env["KEPLER_CONFIG"]["value"] == worker_env["KEPLER_CONFIG"] == "/etc/kepler/kepler.yaml"
    config = one(objects, "ConfigMap")
    platform = parse_platform(config["data"]["kepler.yaml"], f"{overlay} kepler.yaml")
    assert platform.console.url and urlsplit(platform.console.url).scheme == "https"

    # none of the worker's secrets; the clusters see the console's own (read-only) account
    assert container["envFrom"] == [{"secretRef": {"name": "kepler-console-secrets"}}]
    for token_env in {e.cluster.token_env for e in platform.environments.values()}:
        assert env[token_env]["valueFrom"] == {
            "secretKeyRef": {"name": "kepler-console-token", "key": "token"}}
    token = one(objects, "Secret", "kepler-console-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "kepler-console"}
    assert one(objects, "ServiceAccount", "kepler-console")["automountServiceAccountToken"] is False

    service = one(objects, "Service", "kepler-console")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": PORT, "targetPort": "http"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_account_reads_what_its_source_reads(overlay: str) -> None:
    objects = render(overlay)
    role = one(objects, "ClusterRole", "kepler-console")
    assert role["rules"] == rbac_console.role()["rules"], f"run `{rbac_console.COMMAND}`"
    binding = one(objects, "ClusterRoleBinding", "kepler-console")
    assert binding["roleRef"]["name"] == "kepler-console"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kepler-console",
                                    "namespace": "kepler-system"}]
    granted = {(v, g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    # a service's page: its Deployment in each environment, the stable pods, one's log tail
    assert granted == {("get", "apps", "deployments"), ("list", "", "pods"), ("get", "", "pods/log")}
    can = [rbac_console.role()]
    assert rbac.allowed("GET", "/apis/apps/v1/namespaces/shop-prod/deployments/shop", can)
    assert rbac.allowed("GET", "/api/v1/namespaces/shop-prod/pods", can)
    assert rbac.allowed("GET", "/api/v1/namespaces/shop-prod/pods/shop-1/log", can)
    assert not rbac.allowed("GET", "/api/v1/namespaces/shop-prod/secrets", can)
    assert not rbac.allowed("GET", "/api/v1/namespaces/shop-prod/configmaps/shop-config", can)
    assert not rbac.allowed("PATCH", "/apis/apps/v1/namespaces/shop-prod/deployments/shop", can)
    assert not rbac.allowed("POST", "/api/v1/namespaces/shop-prod/pods/shop-1/exec", can)
    assert not rbac.allowed("DELETE", "/api/v1/namespaces/shop-prod/pods/shop-1", can)


def test_the_console_sources_are_what_it_imports() -> None:
    found = {p.relative_to(ROOT).as_posix() for p in rbac_console.modules()}
    assert {"starter/console/app.py", "kepler/clients/kube.py", "kepler/clients/pod_logs.py",
            "starter/promotion.py"} <= found
    assert not [p for p in found if p.split("/")[0] not in ("starter", "kepler")]
    assert "starter/cli.py" not in found and "starter/dev.py" not in found


@pytest.mark.parametrize("line, error", [
    ("core.delete_namespaced_pod(name, ns)", "delete_namespaced_pod"),
    ("core.patch_namespaced_deployment(name, ns, body)", "patch_namespaced_deployment"),
    ("core.read_namespaced_secret(name, ns)", "read_namespaced_secret"),
    ("core.list_secret_for_all_namespaces()", "list_secret_for_all_namespaces"),
    ("api.call_api('/api/v1/namespaces', 'GET')", "call_api"),
])
def test_a_console_call_that_is_not_a_listed_read_fails_the_generator(
        tmp_path: Path, line: str, error: str) -> None:
    (tmp_path / "page.py").write_text(f"def data(core, api, name, ns, body):\n    {line}\n")
    with pytest.raises(rbac.RbacError, match=error):
        rbac_console.required_access([tmp_path / "page.py"])
    (tmp_path / "page.py").write_text("def data(core, name, ns):\n"
                                      "    return core.read_namespaced_pod_log(name, ns)\n")
    assert rbac_console.required_access([tmp_path / "page.py"]) == {"Pod/log": {"get"}}


def _mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) of a compose service's short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = (source, mode == ["ro"])
    return out


def test_compose_runs_the_console_beside_the_worker_on_the_same_files() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    worker, console = services["worker"], services["console"]
    assert console["command"] == LISTEN
    assert console["build"] == worker["build"] and console["image"] == worker["image"]
    assert "user" not in console  # the image's: USER 10001 (test_worker_image_is_small_and_non_root)
    assert console["read_only"] is True
    assert f"{PORT}:{PORT}" in console["ports"]
    assert console["depends_on"]["temporal-setup"] == {"condition": "service_completed_successfully"}
    env = console["environment"]
    assert env["KEPLER_CONSOLE_SECRET"].startswith("${KEPLER_CONSOLE_SECRET:?")  # from the environment
    assert env["KEPLER_CONFIG"] == worker["environment"]["KEPLER_CONFIG"] == "/etc/kepler/kepler.yaml"
    assert "KEPLER_SEAL_KEY" not in env  # no authority of the worker's

    platform = parse_platform((DEPLOY / "compose.kepler.yaml").read_text(), "compose.kepler.yaml")
    assert platform.console.url == f"http://localhost:{PORT}"
    signers, passkeys = platform.identity.allowed_signers, platform.identity.passkeys
    assert signers and passkeys
    mounts, worker_mounts = _mounts(console), _mounts(worker)
    assert mounts["/etc/kepler/kepler.yaml"] == worker_mounts["/etc/kepler/kepler.yaml"] == (
        "./compose.kepler.yaml", True)
    # read-only but for the passkeys file, which enrolment appends to
    assert [target for target, (_, ro) in mounts.items() if not ro] == [passkeys]
    assert mounts[signers] == ("./identity/allowed_signers", True)
    assert mounts[passkeys][0] == "./identity/passkeys"
    # the worker reads the very same files (it verifies passkey assertions), read-only
    assert worker_mounts["/etc/kepler/identity"] == ("./identity", True)
    assert {signers, passkeys} == {f"/etc/kepler/identity/{mounts[t][0].split('/')[-1]}"
                                   for t in (signers, passkeys)}
    assert (DEPLOY / "identity" / ".gitignore").exists()  # the folder the header fills
