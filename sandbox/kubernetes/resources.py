"""What the Kubernetes stand-in serves: resource kinds, API errors, name and label rules.

The validation messages follow the real apiserver's wording, so what a user reads
from the stand-in is what they would read from a cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    versions: tuple[str, ...]  # first is the preferred/storage version
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    name_rule: str = "subdomain"  # subdomain | label | dns1035
    has_generation: bool = False
    categories: tuple[str, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified(self) -> str:
        """`Deployment.apps`, as error messages name a kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def plural_qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


ISTIO = "networking.istio.io"
RBAC = "rbac.authorization.k8s.io"
ADMISSION = "admissionregistration.k8s.io"
RESOURCES: tuple[Resource, ...] = (
    Resource("", ("v1",), "namespaces", "Namespace", False, ("ns",), ("status",), "label"),
    Resource("", ("v1",), "pods", "Pod", True, ("po",), ("status",), categories=("all",)),
    Resource("", ("v1",), "services", "Service", True, ("svc",), ("status",), "dns1035",
             categories=("all",)),
    Resource("", ("v1",), "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", ("v1",), "secrets", "Secret", True),
    Resource("", ("v1",), "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource("", ("v1",), "events", "Event", True, ("ev",)),
    Resource("", ("v1",), "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",),
             ("status",)),
    Resource("apps", ("v1",), "deployments", "Deployment", True, ("deploy",),
             ("scale", "status"), has_generation=True, categories=("all",)),
    Resource("apps", ("v1",), "replicasets", "ReplicaSet", True, ("rs",),
             ("scale", "status"), has_generation=True, categories=("all",)),
    Resource("batch", ("v1",), "cronjobs", "CronJob", True, ("cj",), ("status",),
             has_generation=True, categories=("all",)),
    Resource("batch", ("v1",), "jobs", "Job", True, (), ("status",), has_generation=True,
             categories=("all",)),
    Resource("autoscaling", ("v2",), "horizontalpodautoscalers", "HorizontalPodAutoscaler",
             True, ("hpa",), ("status",), has_generation=True, categories=("all",)),
    Resource("policy", ("v1",), "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",),
             ("status",), has_generation=True),
    # RBAC objects, so the worker's deploy/kubernetes manifests apply here too (stored, not enforced)
    Resource(RBAC, ("v1",), "clusterroles", "ClusterRole", False),
    Resource(RBAC, ("v1",), "clusterrolebindings", "ClusterRoleBinding", False),
    Resource(RBAC, ("v1",), "roles", "Role", True),
    Resource(RBAC, ("v1",), "rolebindings", "RoleBinding", True),
    # and its admission policy (deploy/kubernetes/base/admission-policy.yaml; stored, not enforced)
    Resource(ADMISSION, ("v1",), "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False,
             (), ("status",), has_generation=True),
    Resource(ADMISSION, ("v1",), "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding",
             False, (), (), has_generation=True),
    Resource(ISTIO, ("v1", "v1beta1"), "virtualservices", "VirtualService", True, ("vs",),
             ("status",), has_generation=True, categories=("istio-io", "networking-istio-io")),
    Resource(ISTIO, ("v1", "v1beta1"), "destinationrules", "DestinationRule", True, ("dr",),
             ("status",), has_generation=True, categories=("istio-io", "networking-istio-io")),
    Resource(ISTIO, ("v1", "v1beta1"), "gateways", "Gateway", True, ("gw",),
             ("status",), has_generation=True, categories=("istio-io", "networking-istio-io")),
)

GROUPS: dict[str, tuple[str, ...]] = {}
for _r in RESOURCES:
    if _r.group:
        GROUPS.setdefault(_r.group, _r.versions)


def find_resource(group: str, version: str, plural: str) -> Resource | None:
    for res in RESOURCES:
        if res.group == group and res.plural == plural and version in res.versions:
            return res
    return None


def resource_for_kind(kind: str, group: str | None = None) -> Resource:
    for res in RESOURCES:
        if res.kind == kind and (group is None or res.group == group):
            return res
    raise KeyError(kind)


class ApiError(Exception):
    """An error the API answers as a `Status` object."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": self.message,
                                "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.plural_qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.plural_qualified} "{name}" already exists',
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {res.plural_qualified} "{name}": the '
                    "object has been modified; please apply your changes to the latest "
                    "version and try again",
                    {"name": name, "group": res.group, "kind": res.plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


class Invalid:
    """Collects field errors; `raise_for` turns them into a 422 `Invalid` Status."""

    def __init__(self) -> None:
        self.causes: list[dict[str, str]] = []

    def add(self, field: str, message: str, value: Any = None,
            reason: str = "FieldValueInvalid") -> None:
        if reason == "FieldValueRequired":
            text = f"{field}: Required value" + (f": {message}" if message else "")
        else:
            text = f"{field}: Invalid value: {_quote(value)}: {message}"
        self.causes.append({"reason": reason, "message": text, "field": field})

    def raise_for(self, res: Resource, name: str) -> None:
        if not self.causes:
            return
        joined = ", ".join(c["message"] for c in self.causes)
        if len(self.causes) > 1:
            joined = f"[{joined}]"
        raise ApiError(422, "Invalid", f'{res.qualified} "{name}" is invalid: {joined}',
                       {"name": name, "group": res.group, "kind": res.kind,
                        "causes": self.causes})


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

NAME_RULES: dict[str, tuple[str, int, str]] = {
    "subdomain": (_SUBDOMAIN, 253,
                  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric "
                  "character (e.g. 'example.com', regex used for validation is "
                  f"'{_SUBDOMAIN}')"),
    "label": (_LABEL, 63,
              "a lowercase RFC 1123 label must consist of lower case alphanumeric "
              "characters or '-', and must start and end with an alphanumeric character "
              f"(e.g. 'my-name',  or '123-abc', regex used for validation is '{_LABEL}')"),
    "dns1035": (_DNS1035, 63,
                "a DNS-1035 label must consist of lower case alphanumeric characters or "
                "'-', start with an alphabetic character, and end with an alphanumeric "
                f"character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                f"'{_DNS1035}')"),
}


def name_errors(name: str, rule: str) -> list[str]:
    pattern, limit, message = NAME_RULES[rule]
    errors = []
    if len(name) > limit:
        errors.append(f"must be no more than {limit} characters")
    if not re.fullmatch(pattern, name):
        errors.append(message)
    return errors


def label_key_errors(key: str) -> list[str]:
    errors = []
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors += [f"prefix part {e}" for e in name_errors(prefix, "subdomain")]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not re.fullmatch(_QUALIFIED, name):
        errors.append("name part must consist of alphanumeric characters, '-', '_' or '.', "
                      "and must start and end with an alphanumeric character (e.g. "
                      "'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                      f"is '{_QUALIFIED}')")
    return errors


def label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if value and not re.fullmatch(_QUALIFIED, value):
        errors.append("a valid label must be an empty string or consist of alphanumeric "
                      "characters, '-', '_' or '.', and must start and end with an "
                      "alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                      f"'12345', regex used for validation is '(({_QUALIFIED})?)')")
    return errors


def validate_labels(labels: Any, field: str, invalid: Invalid) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        invalid.add(field, "must be a map of strings", labels)
        return
    for key, value in labels.items():
        for e in label_key_errors(str(key)):
            invalid.add(field, e, key)
        if not isinstance(value, str):
            invalid.add(f"{field}[{key}]", "must be a string", value)
            continue
        for e in label_value_errors(value):
            invalid.add(f"{field}", e, value)
