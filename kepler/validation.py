"""The naming rules (services, environments, users, git refs, Kubernetes names and
quantities, durations), each a validator whose message names the rule.

Pydantic prefixes the field, so a user reads e.g.
`service.name: must be a DNS-1035 label (...)`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError

RESERVED_SERVICE_NAMES = ("freeze",)  # freeze@<env> is kepler freeze's workflow id
SERVICE_NAME_MAX = 40  # so `<name>-canary` and friends stay within 63
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def service_name(value: str) -> str:
    if len(value) > SERVICE_NAME_MAX or not _DNS1035.fullmatch(value):
        raise ValueError(
            "must be a DNS-1035 label: lowercase letters, digits and '-', starting with a "
            f"letter, ending with a letter or digit, at most {SERVICE_NAME_MAX} characters "
            f"(got {value[:80]!r})")
    if value in RESERVED_SERVICE_NAMES:
        raise ValueError(f"{value!r} is reserved: {value}@<env> is an environment's ad-hoc freeze")
    return value


def env_name(value: str) -> str:
    if len(value) > 20 or not _DNS1035.fullmatch(value):
        raise ValueError("must be a DNS-1035 label of at most 20 characters "
                         f"(got {value[:80]!r})")
    return value


def dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"must be a DNS-1123 subdomain (got {value[:80]!r})")
    return value


def user_name(value: str) -> str:
    if not _USER.fullmatch(value):
        raise ValueError("must be 1-64 characters of letters, digits and ._@+- "
                         f"starting with a letter or digit (got {value[:80]!r})")
    return value


def git_ref(value: str) -> str:
    """git check-ref-format's rules, for a branch, tag or commit id."""
    problem = None
    if not value or len(value) > 255:
        problem = "must be 1-255 characters"
    elif any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        problem = "must not contain spaces or control characters"
    elif any(c in value for c in "~^:?*[\\"):
        problem = "must not contain any of ~ ^ : ? * [ \\"
    elif ".." in value or "@{" in value or "//" in value or value == "@":
        problem = "must not contain '..', '@{' or '//', nor be '@'"
    elif value.startswith(("/", "-")) or value.endswith(("/", ".")):
        problem = "must not start with '/' or '-', nor end with '/' or '.'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in value.split("/")):
        problem = "no path component may start with '.' or end with '.lock'"
    if problem:
        raise ValueError(f"is not a valid git ref: {problem} (got {value[:80]!r})")
    return value


def env_var_name(value: str) -> str:
    if not _ENV_VAR.fullmatch(value) or len(value) > 128:
        raise ValueError(f"must be a C identifier [A-Za-z_][A-Za-z0-9_]* (got {value[:80]!r})")
    return value


def config_key(value: str) -> str:
    if not _CONFIG_KEY.fullmatch(value) or len(value) > 253 or value in (".", ".."):
        raise ValueError("must be a ConfigMap key: letters, digits, '-', '_' and '.', "
                         f"not '.' or '..' (got {value[:80]!r})")
    return value


def quantity(value: str) -> str:
    if not _QUANTITY.fullmatch(value):
        raise ValueError(f"must be a Kubernetes quantity such as 500m, 1, 256Mi (got {value[:80]!r})")
    return value


def parse_duration(value: Any) -> Any:
    """'1m', '24h', '1h30m', '2d', or seconds as a number."""
    try:
        return _parse_duration(value)
    except OverflowError:
        raise ValueError(f"is too long (got {str(value)[:40]!r})") from None


def _parse_duration(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        if value.startswith("P"):
            return value  # ISO 8601, as pydantic serialises a timedelta: its own parser reads it
        m = _DURATION.fullmatch(value.strip())
        if m and any(m.groups()):
            d, h, mi, s = (int(x or 0) for x in m.groups())
            return timedelta(days=d, hours=h, minutes=mi, seconds=s)
        raise ValueError(f"must be a duration such as 30s, 1m, 24h or 1h30m (got {value[:40]!r})")
    return value


# No duration Kepler takes (a soak, a canary's deadline, an approval timeout) may exceed
# this: a workflow timer beyond it overflows (3000000d once wedged a decommission).
MAX_DURATION = timedelta(days=90)


def bounded_duration(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError(f"must not be negative (got {value})")
    if value > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION.days} days (got {_human(value)})")
    return value


def _human(value: timedelta) -> str:
    return f"{value.days} days" if value.days else str(value)


ServiceName = Annotated[str, AfterValidator(service_name)]
EnvName = Annotated[str, AfterValidator(env_name)]
UserName = Annotated[str, AfterValidator(user_name)]
GitRef = Annotated[str, AfterValidator(git_ref)]
DnsSubdomain = Annotated[str, AfterValidator(dns_subdomain)]
EnvVarName = Annotated[str, AfterValidator(env_var_name)]
ConfigKey = Annotated[str, AfterValidator(config_key)]
Quantity = Annotated[str, AfterValidator(quantity)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(bounded_duration)]


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `field.path: message`."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "input")
        lines.append(f"{where}: {msg}")
    return "\n".join(lines)
