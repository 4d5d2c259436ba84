"""deploy/kubernetes on the real control plane (`make cluster`): the base and the prod overlay
accepted by a server-side dry run and then applied server-side, the worker's and the console's
ServiceAccounts asked with tokens of their own what they may do, and the Deployments rolled
out on kwok's node. tests/test_deploy.py checks the same manifests as rendered and on the
stand-in; here the real API server's admission, RBAC authorizer and controllers answer."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import rbac, rbac_console
from sandbox.cluster import RealCluster
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = {"base": ROOT / "deploy/kubernetes/base",
                  "prod": ROOT / "deploy/kubernetes/overlays/prod"}
NS = "kepler-system"
MANAGER = "kepler-deploy"  # the field manager of every apply here
SERVICE_NS = "shop-prod"  # a namespace Kepler would make ({service}-{env}); can-i needs none
TIMEOUT = 120
ALL = "*"  # a question about every namespace (`-A`): cluster-scoped kinds, or cluster-wide
# what every authenticated user may do (system:basic-user), on top of the roles under test
SELF_REVIEWS = {("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
                ("create", "authorization.k8s.io", "selfsubjectrulesreviews"),
                ("create", "authentication.k8s.io", "selfsubjectreviews")}
WRITES = ("create", "update", "patch", "delete", "deletecollection")

Question = tuple[str, str, str, str]  # (verb, resource[.group], subresource, namespace or ALL)


@dataclass
class Kubectl:
    """The cluster's own kubectl on one kubeconfig: the admin's, or a token's."""

    binary: Path
    kubeconfig: Path
    home: Path  # kubectl's discovery cache goes here, not in the real HOME

    def run(self, *args: str, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
                              input=stdin, capture_output=True, text=True, timeout=TIMEOUT + 60,
                              env={"HOME": str(self.home), "PATH": "/usr/bin:/bin", **(env or {})})

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def as_token(self, token: str, user: str) -> Kubectl:
        """The same server and CA, authenticated by `token` alone (no admin credentials)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": user, "user": {"token": token}}]
        for context in config["contexts"]:
            context["context"]["user"] = user
        path = self.home / f"{user}.kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return Kubectl(self.binary, path, self.home)

    def can_i(self, question: Question) -> bool:
        """`kubectl auth can-i`: a SelfSubjectAccessReview, answered by the API server's authorizer."""
        verb, resource, sub, ns = question
        args = ["auth", "can-i", verb, resource, *([f"--subresource={sub}"] if sub else []),
                *(["-A"] if ns == ALL else ["-n", ns])]
        result = self.run(*args)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stderr}"
        return answer == "yes"

    def rules(self, ns: str) -> tuple[set[tuple[str, str, str]], Any]:
        """Every (verb, group, resource) this user holds in `ns`: a SelfSubjectRulesReview,
        what `kubectl auth can-i --list` shows."""
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                  "spec": {"namespace": ns}}
        # --validate=false: validation lists CRDs first, which neither account may
        status = json.loads(self("create", "--validate=false", "-o", "json", "-f", "-",
                                 stdin=json.dumps(review)))["status"]
        granted = {(verb, group, resource) for rule in status["resourceRules"]
                   for verb in rule["verbs"] for group in rule["apiGroups"]
                   for resource in rule["resources"]}
        return granted, status


@dataclass
class Install:
    """What applying deploy/ did, step by step; the tests assert on it."""

    rendered: dict[str, list[dict[str, Any]]]  # "base" | "prod" -> its objects
    files: dict[str, Path]
    dry_runs: dict[str, subprocess.CompletedProcess[str]]
    after_dry_runs: set[str]  # of the rendered objects, those that existed after the dry runs
    applies: dict[str, subprocess.CompletedProcess[str]]


def ref(obj: dict[str, Any]) -> str:
    """kubectl's name for an object: `deployment.apps/kepler-worker`, `namespace/kepler-system`."""
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}{'.' + group if group else ''}/{obj['metadata']['name']}"


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def rule_triples(roles: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(verb, group, resource) for role in roles for rule in role["rules"]
            for verb in rule["verbs"] for group in rule["apiGroups"] for resource in rule["resources"]}


def questions(need: dict[str, set[str]]) -> list[Question]:
    """deploy/rbac.py's kind -> verbs as can-i questions, namespaced kinds in a service's namespace."""
    asked = []
    for kind, verbs in sorted(need.items()):
        group, resource, namespaced = rbac.resource_of(kind)
        plural, _, sub = resource.partition("/")
        asked += [(verb, f"{plural}.{group}" if group else plural, sub, SERVICE_NS if namespaced else ALL)
                  for verb in sorted(verbs)]
    return asked


@pytest.fixture(scope="module")
def admin(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(real_cluster.kubectl, real_cluster.kubeconfig, tmp_path_factory.mktemp("deploy-real"))


@pytest.fixture(scope="module")
def install(admin: Kubectl) -> Install:
    """Render the base and the prod overlay, dry-run both server-side, then apply the base and
    upgrade it to prod, as a platform would; failures are recorded for the tests, not raised."""
    assert admin.run("get", "namespace", NS).returncode != 0, \
        f"{NS} exists: something else applied deploy/ to the shared cluster"
    rendered, files = {}, {}
    for name, path in KUSTOMIZATIONS.items():
        files[name] = admin.home / f"{name}.yaml"
        files[name].write_text(admin("kustomize", str(path)))
        rendered[name] = [d for d in yaml.safe_load_all(files[name].read_text()) if d]
    # A dry run persists nothing, so a dry run of the Namespace leaves the namespaced objects
    # nowhere to go (NotFound). A real apply is one step (kubectl applies the Namespace
    # first); checking before applying takes the namespace first, as `kubectl create ns` would.
    namespace = one(rendered["base"], "Namespace", NS)
    admin("apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-", stdin=json.dumps(namespace))
    dry_runs = {name: admin.run("apply", "--server-side", "--dry-run=server",
                                f"--field-manager={MANAGER}", "-f", str(path))
                for name, path in files.items()}
    existing = admin.run("get", *(a for p in files.values() for a in ("-f", str(p))),
                         "--ignore-not-found", "-o", "name")
    assert existing.returncode == 0, existing.stderr
    # the Secrets the Deployments name and the README has the platform create out of band
    admin("create", "secret", "generic", "kepler-secrets", "-n", NS,
          "--from-literal=KEPLER_GITLAB_TOKEN=not-a-real-token")
    admin("create", "secret", "generic", "kepler-console-secrets", "-n", NS,
          "--from-literal=KEPLER_CONSOLE_SECRET=not-a-real-secret")
    applies = {name: admin.run("apply", "--server-side", f"--field-manager={MANAGER}", "-f", str(path))
               for name, path in files.items()}
    return Install(rendered, files, dry_runs, set(existing.stdout.split()), applies)


def account(admin: Kubectl, name: str, source: str = "requested") -> Kubectl:
    """kubectl as ServiceAccount `name`: a token from the TokenRequest API (`kubectl create
    token`), or the one the token controller wrote into the Secret `{name}-token`."""
    if source == "requested":
        token = admin("create", "token", name, "-n", NS, "--duration=1h").strip()
    else:
        admin("wait", "--for=jsonpath={.data.token}", f"secret/{name}-token", "-n", NS,
              f"--timeout={TIMEOUT}s")
        token = base64.b64decode(admin("get", "secret", f"{name}-token", "-n", NS,
                                       "-o", "jsonpath={.data.token}")).decode()
    kubectl = admin.as_token(token, f"{name}-{source}")
    # not the admin by mistake: every "yes" below would be vacuous, every "no" would fail
    assert kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}") == \
        f"system:serviceaccount:{NS}:{name}"
    return kubectl


@pytest.fixture(scope="module")
def worker(admin: Kubectl, install: Install) -> Kubectl:
    return account(admin, "kepler-worker")


def test_a_server_side_dry_run_accepts_every_object_and_creates_none(install: Install) -> None:
    for name, result in install.dry_runs.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert sorted(result.stdout.splitlines()) == sorted(
            f"{ref(o)} serverside-applied (server dry run)" for o in install.rendered[name])
    assert install.after_dry_runs == {f"namespace/{NS}"}


def test_a_server_side_apply_creates_every_object_under_its_field_manager(
        install: Install, admin: Kubectl) -> None:
    for name, result in install.applies.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert sorted(result.stdout.splitlines()) == sorted(
            f"{ref(o)} serverside-applied" for o in install.rendered[name])
    prod = install.rendered["prod"]
    live = admin.json("get", "-f", str(install.files["prod"]), "--show-managed-fields")["items"]
    assert sorted(map(ref, live)) == sorted(map(ref, prod))
    for obj in live:
        fields = obj["metadata"]["managedFields"]
        assert {"manager": MANAGER, "operation": "Apply"}.items() <= \
            next((f for f in fields if f["manager"] == MANAGER), {}).items(), ref(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kepler", ref(obj)
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                               "ValidatingAdmissionPolicyBinding"):
            assert obj["metadata"]["namespace"] == NS, ref(obj)
    deploy = one(live, "Deployment", "kepler-worker")
    assert deploy["spec"]["replicas"] == 3 and deploy["metadata"]["labels"]["kepler.dev/overlay"] == "prod"
    # applied again, nothing would change: no field the server defaults or rewrites differently
    # (whole files as context, so each changed line's top-level key is known)
    diff = admin.run("diff", "--server-side", f"--field-manager={MANAGER}", "-f",
                     str(install.files["prod"]), env={"KUBECTL_EXTERNAL_DIFF": "diff -N -U 100000"})
    assert diff.returncode in (0, 1), diff.stderr
    # the controllers and kwok write status meanwhile: status and a resourceVersion moving
    # are not a change
    assert changed_outside_status(diff.stdout) == [], diff.stdout


def changed_outside_status(diff: str) -> list[str]:
    changed, section = [], ""
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "@@", "diff ")):
            continue
        content = line[1:]
        if content and not content.startswith(" "):
            section = content.split(":", 1)[0]
        if line[:1] in "+-" and section != "status" and "resourceVersion:" not in content:
            changed.append(line)
    return changed


def test_the_worker_token_may_do_what_the_activities_call(worker: Kubectl) -> None:
    need = questions(rbac.required_access())
    assert len(need) > 30 and ("create", "virtualservices.networking.istio.io", "", SERVICE_NS) in need
    assert [q for q in need if not worker.can_i(q)] == []
    # the account holds exactly the generated roles, nothing bound from elsewhere
    granted, status = worker.rules(SERVICE_NS)
    assert not status.get("incomplete") and not status.get("evaluationError")
    assert granted - SELF_REVIEWS == rule_triples(rbac.cluster_roles())


WORKER_MUST_NOT: list[Question] = [
    *[(verb, "secrets", "", ns) for verb in ("get", "list", "watch") for ns in (SERVICE_NS, NS, ALL)],
    *[(verb, "pods", "", SERVICE_NS) for verb in WRITES],
    ("create", "pods", "exec", SERVICE_NS), ("get", "pods", "exec", SERVICE_NS),
    *[(verb, "persistentvolumeclaims", "", SERVICE_NS) for verb in WRITES],
    ("deletecollection", "namespaces", "", ALL), ("watch", "deployments.apps", "", SERVICE_NS),
    ("create", "serviceaccounts", "token", SERVICE_NS),  # would mint any account's token
    ("create", "serviceaccounts", "token", NS),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", ALL),
    ("create", "rolebindings.rbac.authorization.k8s.io", "", SERVICE_NS),
    ("create", "clusterroles.rbac.authorization.k8s.io", "", ALL),
    ("patch", "clusterroles.rbac.authorization.k8s.io", "", ALL),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", ALL),
    ("bind", "clusterroles.rbac.authorization.k8s.io", "", ALL),
    ("impersonate", "users", "", ALL), ("impersonate", "groups", "", ALL),
    ("impersonate", "serviceaccounts", "", ALL),
    ("get", "nodes", "", ALL), ("patch", "nodes", "", ALL),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", ALL),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", ALL),
    ("create", "certificatesigningrequests.certificates.k8s.io", "", ALL),
]


def test_the_worker_token_may_not_touch_secrets_pods_rbac_or_the_cluster(worker: Kubectl) -> None:
    assert [q for q in WORKER_MUST_NOT if worker.can_i(q)] == []


def test_the_worker_token_deletes_only_namespaces_a_kepler_run_made(
        admin: Kubectl, worker: Kubectl) -> None:
    """RBAC grants delete on every namespace (the undo of a failed create needs it); the
    base's ValidatingAdmissionPolicy refuses the worker any namespace without Kepler's
    created-by-run annotation, kube-system included."""
    theirs, ours = f"not-kepler-{uuid.uuid4().hex[:6]}", f"kepler-made-{uuid.uuid4().hex[:6]}"
    admin("create", "namespace", theirs)
    admin("create", "namespace", ours)
    admin("annotate", "namespace", ours, "kepler.dev/created-by-run=run-1")
    try:
        # a server-side dry run passes authorization and admission and deletes nothing
        for ns in (theirs,):  # kube-system and default: the apiserver refuses their deletion itself
            attempt = worker.run("delete", "namespace", ns, "--dry-run=server")
            assert attempt.returncode != 0, f"{ns}: {attempt.stdout}"
            assert "kepler-worker deletes only namespaces a Kepler run created" in attempt.stderr, attempt.stderr
        made = worker.run("delete", "namespace", ours, "--dry-run=server")
        assert made.returncode == 0, made.stderr
        # nor can it mark one as Kepler's first, then delete it
        marked = worker.run("annotate", "namespace", theirs, "kepler.dev/created-by-run=forged")
        assert marked.returncode != 0 and "may not mark" in marked.stderr, marked.stdout + marked.stderr
        assert "kepler.dev/created-by-run" not in admin("get", "namespace", theirs, "-o", "yaml")
        relabelled = worker.run("label", "namespace", ours, "team=x")  # other updates go on
        assert relabelled.returncode == 0, relabelled.stderr
    finally:
        admin("delete", "namespace", theirs, ours, "--wait=false")


@pytest.mark.parametrize("source", ["requested", "secret"])
def test_the_console_token_only_reads(admin: Kubectl, install: Install, source: str) -> None:
    """Both tokens: one asked for, and the one the Deployment hands the console (its Secret)."""
    console = account(admin, "kepler-console", source)
    need = questions(rbac_console.required_access())
    assert ("get", "deployments.apps", "", SERVICE_NS) in need
    assert [q for q in need if not console.can_i(q)] == []
    granted, status = console.rules(SERVICE_NS)
    assert not status.get("incomplete") and not status.get("evaluationError")
    assert granted - SELF_REVIEWS == rule_triples([rbac_console.role()])
    assert {verb for verb, _, _ in granted - SELF_REVIEWS} <= {"get", "list", "watch"}
    must_not: list[Question] = [
        *[(verb, resource, "", SERVICE_NS) for verb in WRITES
          for resource in ("deployments.apps", "pods", "services", "configmaps",
                           "virtualservices.networking.istio.io")],
        *[(verb, "namespaces", "", ALL) for verb in WRITES],
        *[(verb, "secrets", "", ns) for verb in ("get", "list") for ns in (SERVICE_NS, NS)],
        ("create", "pods", "exec", SERVICE_NS), ("create", "serviceaccounts", "token", NS),
        ("impersonate", "serviceaccounts", "", ALL),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", ALL),
    ]
    assert [q for q in must_not if console.can_i(q)] == []


def test_the_worker_and_the_console_become_available(install: Install, admin: Kubectl) -> None:
    assert all(r.returncode == 0 for r in install.applies.values())
    prod = install.rendered["prod"]
    for name, mounts_token in (("kepler-worker", True), ("kepler-console", False)):
        rendered = one(prod, "Deployment", name)
        out = admin("rollout", "status", f"deployment/{name}", "-n", NS, f"--timeout={TIMEOUT}s")
        assert f'deployment "{name}" successfully rolled out' in out
        live = admin.json("get", "deployment", name, "-n", NS)
        spec, status = live["spec"], live["status"]
        assert spec["replicas"] == rendered["spec"]["replicas"]
        assert status["observedGeneration"] == live["metadata"]["generation"]
        assert status["availableReplicas"] == status["updatedReplicas"] == spec["replicas"]
        pods = eventually(lambda: live_pods(admin, name, spec["replicas"]),
                          what=f"{spec['replicas']} pods of {name}", timeout=TIMEOUT)
        image = rendered["spec"]["template"]["spec"]["containers"][0]["image"]
        for pod in pods:
            assert pod["spec"]["serviceAccountName"] == name
            assert [c["image"] for c in pod["spec"]["containers"]] == [image]
            ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
            assert ready == "True" and pod["status"]["phase"] == "Running"
            # the ServiceAccount admission plugin mounts a token unless the manifests say not to
            volumes = [v["name"] for v in pod["spec"]["volumes"]]
            assert any(v.startswith("kube-api-access-") for v in volumes) == mounts_token, volumes

    # the HPA found its Deployment; the PDB counts the worker's ready pods
    admin("wait", "--for=condition=AbleToScale", "hpa/kepler-worker", "-n", NS, f"--timeout={TIMEOUT}s")
    workers = one(prod, "Deployment", "kepler-worker")["spec"]["replicas"]
    allowed = workers - one(prod, "PodDisruptionBudget", "kepler-worker")["spec"]["minAvailable"]
    assert allowed >= 1, "the PDB would block every voluntary eviction (a node drain)"
    admin("wait", f"--for=jsonpath={{.status.disruptionsAllowed}}={allowed}",
          "pdb/kepler-worker", "-n", NS, f"--timeout={TIMEOUT}s")
    # the Services' named targetPorts resolve to the containers' ports, on every ready pod
    for service, port, replicas in (("kepler-console", 8480, 1), ("kepler-worker-metrics", 9464, workers)):
        eventually(lambda: expect(serving(admin, service), (replicas, [port])),
                   what=f"{service}: (ready endpoints, ports)", timeout=TIMEOUT)


def live_pods(admin: Kubectl, name: str, replicas: int) -> list[dict[str, Any]]:
    """The Deployment's pods once the old ReplicaSet's are gone (empty until then)."""
    pods = [p for p in admin.json("get", "pods", "-n", NS, "-l", f"app.kubernetes.io/name={name}")["items"]
            if not p["metadata"].get("deletionTimestamp")]
    return pods if len(pods) == replicas else []


def expect(actual: object, expected: object) -> bool:
    """For `eventually`: a mismatch is its last error, which the timeout shows."""
    assert actual == expected, actual
    return True


def serving(admin: Kubectl, service: str) -> tuple[int, list[int]]:
    slices = admin.json("get", "endpointslices", "-n", NS,
                        "-l", f"kubernetes.io/service-name={service}")["items"]
    ready = sum(1 for s in slices for e in s.get("endpoints") or []
                if e.get("conditions", {}).get("ready"))
    return ready, sorted({p["port"] for s in slices for p in s.get("ports") or []})
