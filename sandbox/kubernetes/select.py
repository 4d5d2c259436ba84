"""Label selectors (string and LabelSelector forms) and field selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from sandbox.kubernetes.resources import bad_request


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # = != in notin exists !
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present  # "!"


Selector = Callable[[dict[str, str]], bool]

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: `a in (x,y),b` -> ['a in (x,y)', 'b']."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    reqs = []
    for part in _split_top_level(text):
        m = _EQ.match(part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
            continue
        m = _SET.match(part)
        if not m or (m.group(1) and m.group(3)):
            raise bad_request(f"unable to parse requirement: found '{part.strip()}', "
                              "expected: in, notin, =, ==, !=, gt, lt")
        if m.group(3):
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(2), m.group(3), values))
        else:
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
    return reqs


def requirements_from_label_selector(selector: dict[str, Any] | None) -> list[Requirement]:
    """A LabelSelector object (matchLabels + matchExpressions)."""
    if not selector:
        return []
    reqs = [Requirement(k, "=", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]],
                                tuple(expr.get("values") or ())))
    return reqs


def matches(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """Does a LabelSelector select these labels? An empty selector selects nothing here,
    as workload controllers treat it."""
    reqs = requirements_from_label_selector(selector)
    return bool(reqs) and matches(reqs, labels)


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    if not text:
        return []
    terms = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid field selector: '{part}'")
        terms.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return terms


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(terms: list[tuple[str, str, str]], obj: dict[str, Any]) -> bool:
    for path, op, value in terms:
        actual = field_value(obj, path)
        if (actual == value) != (op == "="):
            return False
    return True
