"""What Kubernetes API access the activities need, read from their source: renders the
worker's ClusterRoles, and tells the tests what to hold them to. A deploy tool, not part
of the worker; from the repository's root:

    python -m deploy.rbac > deploy/kubernetes/base/rbac-rules.yaml    (or: make rbac)
    python -m deploy.rbac namespace-cleanup > deploy/kubernetes/base/rbac-namespace-cleanup.yaml
    python -m deploy.rbac console > deploy/kubernetes/base/rbac-console.yaml

Every Kubernetes call goes through `activities.kubernetes.client.Cluster`, whose verbs
map to RBAC verbs one to one (and `read_modify_write(cluster, kind, ...)`, which is a
get and an update of `kind`). A call whose kind is a literal (a string, or a dict
literal with a "kind") needs that kind. A call whose kind is chosen at run time must say
which kinds it may be, in a comment on one of the call's lines:

    cluster.list(kind, ns, sel)  # rbac: ISTIO_KINDS, KUBERNETES_KINDS

Each name is a kind of `KINDS` or a module-level list/tuple of kinds (literals, `*NAME`
and `A + B` of such), defined in the call's own module or in
activities/kubernetes/client.py (`MANAGED_KINDS`). A variable-kind call without such a
comment, or naming something unknown, fails the generator (`RbacError`), and with it
tests/test_deploy.py: new code cannot silently widen the worker's rights.

A clause `ROLE: NAMES` (or a bare `ROLE` on a literal-kind call) puts those kinds of that
call in an opt-in role instead of the base roles; the only one is `namespace-cleanup`
(ClusterRole `kepler-namespace-cleanup`, deploy/kubernetes/base/rbac-namespace-cleanup.yaml,
not in the kustomize base: a platform applies it when it sets
`decommission.delete_namespaces: true`). It holds only what the base roles do not grant:

    cluster.delete(undo.kind, ns, name)  # rbac: MANAGED_KINDS; namespace-cleanup: Namespace
    cluster.delete("Namespace", None, ns)  # rbac: namespace-cleanup

What the worker asks for outside Cluster's verbs (the log of a pod, a subresource read
with the official client) is listed in `EXTRA`, with where and why.

The console's read-only ClusterRole (`python -m deploy.rbac console`) is derived from the
console's own source: deploy/rbac_console.py.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

COMMAND = "python -m deploy.rbac > deploy/kubernetes/base/rbac-rules.yaml"
CLEANUP_COMMAND = ("python -m deploy.rbac namespace-cleanup > "
                   "deploy/kubernetes/base/rbac-namespace-cleanup.yaml")
CLUSTER_VERBS = {"get": "get", "list": "list", "create": "create", "replace": "update",
                 "patch": "patch", "delete": "delete"}
# helpers that take (cluster, kind, ...) and call verbs of their own on that kind: their
# call sites are counted, the verbs inside them are not
WRAPPERS = {"read_modify_write": ("get", "update")}
OPT_IN = {"namespace-cleanup": "kepler-namespace-cleanup"}  # clause name -> ClusterRole
BASE = ""  # the role of a call without an opt-in clause: the base ClusterRoles
ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "activities" / "kubernetes" / "client.py"  # Cluster: the verbs themselves
# (verb, Kind/subresource, file under activities/, why): requests the scan cannot see
EXTRA = [("get", "Pod/log", "kubernetes/cronjob.py",
          "the log tail of a failed cronjob run: kepler/pod_logs.read, the official "
          "client's read_namespaced_pod_log (a subresource; `kepler logs` reads it too)")]
WORKER = {"kind": "ServiceAccount", "name": "kepler-worker", "namespace": "kepler-system"}
META = {"labels": {"app.kubernetes.io/name": "kepler-worker", "app.kubernetes.io/part-of": "kepler"}}


class RbacError(ValueError):
    """A call whose kinds the generator cannot know: annotate it (see the module doc)."""


@dataclass(frozen=True)
class CallSite:
    path: str
    line: int
    verb: str
    kind: str  # a KINDS key
    role: str = BASE  # or an OPT_IN key


def _is_cluster(node: ast.expr) -> bool:
    """`cluster`, `self.cluster`, `self.clusters(env)`, `clusters(env)`."""
    if isinstance(node, ast.Name):
        return node.id == "cluster"
    if isinstance(node, ast.Attribute):
        return node.attr == "cluster"
    if isinstance(node, ast.Call):
        f = node.func
        return (isinstance(f, ast.Attribute) and f.attr == "clusters") or \
            (isinstance(f, ast.Name) and f.id == "clusters")
    return False


def _literal_kind(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and k.value == "kind" and isinstance(v, ast.Constant):
                return str(v.value)
    return None


def _constants(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level NAME = [kinds...] / (kinds...), with `*OTHER` and `A + B` resolved."""
    raw: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            raw[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            raw[node.target.id] = node.value

    def kinds(node: ast.expr) -> list[str] | None:
        if isinstance(node, ast.Name) and node.id in raw:
            return kinds(raw[node.id])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = kinds(node.left), kinds(node.right)
            return None if left is None or right is None else left + right
        if isinstance(node, (ast.List, ast.Tuple)):
            out: list[str] = []
            for elt in node.elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    out.append(elt.value)
                elif isinstance(elt, ast.Starred) and (inner := kinds(elt.value)) is not None:
                    out += inner
                else:
                    return None
            return out
        return None

    return {name: found for name, value in raw.items() if (found := kinds(value)) is not None}


def _comments(source: str) -> dict[int, str]:
    """line -> the `rbac:` annotation on it."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and (m := re.match(r"#\s*rbac:\s*(.*)", tok.string)):
            found[tok.start[0]] = m.group(1).strip()
    return found


def _annotated(text: str, where: str, names: dict[str, list[str]]) -> dict[str, list[str]]:
    """`# rbac: A, B; namespace-cleanup: C` -> {role: kinds}; a bare `namespace-cleanup`
    gives that role no kinds (the call's literal kind goes there)."""
    from activities.kubernetes.client import KINDS

    roles: dict[str, list[str]] = {}
    for clause in filter(None, (c.strip() for c in text.split(";"))):
        role, _, listed = clause.rpartition(":") if ":" in clause else ("", "", clause)
        role, listed = role.strip(), listed.strip()
        if not role and listed in OPT_IN:
            role, listed = listed, ""
        if role and role not in OPT_IN:
            raise RbacError(f"{where}: unknown role {role!r} in `# rbac: {text}` "
                            f"(opt-in roles: {', '.join(OPT_IN)})")
        kinds = roles.setdefault(role, [])
        for name in filter(None, (n.strip() for n in listed.split(","))):
            if name in KINDS:
                kinds.append(name)
            elif name in names:
                kinds += names[name]
            else:
                raise RbacError(f"{where}: {name!r} in `# rbac: {text}` is neither a kind of "
                                "KINDS nor a list of kinds in this module or client.py")
    return roles


def _sites_of(path: Path, rel: str, client_names: dict[str, list[str]]) -> list[CallSite]:
    source = path.read_text()
    tree = ast.parse(source, str(path))
    names = {**client_names, **_constants(tree)}
    comments = _comments(source)
    inside_wrappers = {id(n) for f in ast.walk(tree)
                       if isinstance(f, ast.FunctionDef) and f.name in WRAPPERS for n in ast.walk(f)}
    sites = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in inside_wrappers:
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in CLUSTER_VERBS and _is_cluster(f.value):
            verbs, kind_arg = (CLUSTER_VERBS[f.attr],), (node.args[0] if node.args else None)
        elif (name := f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) in WRAPPERS:
            verbs, kind_arg = WRAPPERS[name], (node.args[1] if len(node.args) > 1 else None)
        else:
            continue
        where = f"activities/{rel}:{node.lineno}"
        text = "; ".join(comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                         if n in comments)
        roles = _annotated(text, where, names) if text else {}
        literal = _literal_kind(kind_arg)
        if literal is not None:
            if any(roles.values()):
                raise RbacError(f"{where}: the kind is the literal {literal!r}: name no kinds "
                                "in its `# rbac:` comment, only an opt-in role")
            role = next(iter(roles), BASE)
            sites += [CallSite(rel, node.lineno, verb, literal, role) for verb in verbs]
            continue
        if not any(roles.values()):
            raise RbacError(f"{where}: a {'/'.join(verbs)} whose kind is chosen at run time and "
                            "no `# rbac: KINDS` comment saying which kinds it may be "
                            "(see deploy/rbac.py)")
        opted = {k for role, kinds in roles.items() if role for k in kinds}
        for role, kinds in roles.items():
            for kind in dict.fromkeys(kinds):
                if role or kind not in opted:
                    sites += [CallSite(rel, node.lineno, verb, kind, role) for verb in verbs]
    return sites


def call_sites(folder: Path | None = None) -> list[CallSite]:
    """Every call of a Cluster verb (or a WRAPPERS helper) in the activities (all of
    activities/, subfolders too), one per verb and kind it may use. Raises RbacError for
    a call whose kinds are not known."""
    folder = folder or ROOT / "activities"
    client_names = _constants(ast.parse(CLIENT.read_text()))
    sites = []
    for path in sorted(folder.rglob("*.py")):
        sites += _sites_of(path, path.relative_to(folder).as_posix(), client_names)
    return sites


def required_access(role: str = BASE) -> dict[str, set[str]]:
    """Kind (or Kind/subresource) -> the RBAC verbs the activities may use on it: in the
    base roles, or what opt-in `role` adds to them."""
    need: dict[str, dict[str, set[str]]] = {}
    for site in call_sites():
        need.setdefault(site.role, {}).setdefault(site.kind, set()).add(site.verb)
    for verb, kind, _, _ in EXTRA:
        need.setdefault(BASE, {}).setdefault(kind, set()).add(verb)
    base = need.get(BASE, {})
    if role == BASE:
        return base
    extra = {kind: verbs - base.get(kind, set()) for kind, verbs in need.get(role, {}).items()}
    return {kind: verbs for kind, verbs in extra.items() if verbs}


def resource_of(kind: str) -> tuple[str, str, bool]:
    """Kind (or Kind/subresource) -> (API group, resource, namespaced)."""
    from activities.kubernetes.client import KINDS

    kind, _, sub = kind.partition("/")
    prefix, plural, namespaced = KINDS[kind]
    group = "" if prefix == "/api/v1" else prefix.split("/")[2]
    return group, plural + (f"/{sub}" if sub else ""), namespaced


def _rules(need: dict[str, set[str]]) -> list[dict]:
    entries: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for kind, verbs in sorted(need.items()):
        group, resource, _ = resource_of(kind)
        entries.setdefault((group, tuple(sorted(verbs))), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            for (group, verbs), resources in sorted(entries.items())]


def _role(name: str, rules: list[dict], meta: dict = META) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, **meta}, "rules": rules}


def _binding(name: str, subject: dict, meta: dict = META) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, **meta}, "subjects": [subject],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}}


def cluster_roles() -> list[dict]:
    """The worker's base ClusterRoles: namespaces (cluster-scoped) and what it manages
    inside them. deploy/kubernetes/base/rbac-rules.yaml is this, rendered by `render()`."""
    need = required_access()
    scoped = {ns: {k: v for k, v in need.items() if resource_of(k)[2] == ns} for ns in (False, True)}
    return [_role("kepler-namespaces", _rules(scoped[False])),
            _role("kepler-managed-objects", _rules(scoped[True]))]


def cleanup_role() -> dict:
    """`kepler-namespace-cleanup`: what deleting the namespaces Kepler made adds to the
    base roles (listing everything that may live in one, Secrets too, and deleting it)."""
    return _role(OPT_IN["namespace-cleanup"], _rules(required_access("namespace-cleanup")))


HEADER = ("# Generated by `python -m deploy.rbac` from the Kubernetes calls in activities/:\n"
          "# exactly the verbs and resources the worker uses. Do not edit by hand;\n"
          "# tests/test_deploy.py fails when the activities and this file disagree.\n")
CLEANUP_HEADER = (
    "# Generated by `python -m deploy.rbac namespace-cleanup`: what the worker needs on top of\n"
    "# rbac-rules.yaml to delete the namespaces Kepler created when a decommission leaves them\n"
    "# empty (list Secrets and the rest that may live there; delete namespaces). OPT-IN: not in\n"
    "# kustomization.yaml. Apply it only with `decommission.delete_namespaces: true` in\n"
    "# kepler.yaml: `kubectl apply -f deploy/kubernetes/base/rbac-namespace-cleanup.yaml`, or add\n"
    "# it to the resources of your kustomization. Do not edit by hand.\n")


def _dump(objects: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def render() -> str:
    return HEADER + _dump(cluster_roles())


def render_cleanup() -> str:
    role = cleanup_role()
    return CLEANUP_HEADER + _dump([role, _binding(role["metadata"]["name"], WORKER)])


def request_access(method: str, path: str) -> tuple[str, str, str]:
    """(verb, API group, resource) that RBAC checks for one REST request of the worker
    (`pods/log` for /namespaces/{ns}/pods/{name}/log)."""
    parts = path.split("?")[0].strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # /namespaces/{ns}/{plural}[/{name}[/{subresource}]]
    resource, named = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else ""), len(rest) > 1
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update",
            "PATCH": "patch", "DELETE": "delete"}[method.upper()]
    return verb, group, resource


def allowed(method: str, path: str, roles: list[dict] | None = None) -> bool:
    """Whether `roles` (the base ClusterRoles unless given) allow one REST request."""
    verb, group, resource = request_access(method, path)
    return any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
               for role in (cluster_roles() if roles is None else roles) for rule in role["rules"])


if __name__ == "__main__":
    from deploy import rbac_console

    renderers = {(): render, ("namespace-cleanup",): render_cleanup, ("console",): rbac_console.render}
    if tuple(sys.argv[1:]) not in renderers:
        sys.exit("usage: python -m deploy.rbac [namespace-cleanup | console]")
    print(renderers[tuple(sys.argv[1:])](), end="")
