"""Alert-driven rollback: Alertmanager's webhook payload (version 4), the policy in
kepler.yaml (`alerts:`) saying which alerts may roll what back, and what the
AlertAction workflow exchanges.

An alert acts only when it is firing, carries `kepler_service` and `kepler_env`, names a
configured environment, and matches a rule. Each firing episode of an alert (its
fingerprint and startsAt) acts at most once: the AlertAction workflow's id is made of
them and a duplicate start is refused by Temporal.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kepler.models import Model, RollbackRequest
from kepler.requests import SignedRequest, Subject
from kepler.validation import UserName, env_name, service_name

SERVICE_LABEL = "kepler_service"
ENV_LABEL = "kepler_env"


# --- Alertmanager's webhook (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)

class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(pattern=r"^[0-9a-f]{1,64}$")


class WebhookPayload(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(max_length=1000)


# --- policy (kepler.yaml `alerts:`) -----------------------------------------------------------

class AlertRule(Model):
    """Alerts whose labels match (`match`: equal, `match_re`: regex, anchored) for these
    services and environments (glob patterns) roll back to the previous version."""
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    services: list[str] = Field(default_factory=lambda: ["*"])
    envs: list[str] = Field(default_factory=lambda: ["*"])

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{label}: not a regular expression: {e}") from None
        return value

    def matches(self, service: str, env: str, labels: dict[str, str]) -> bool:
        return (any(fnmatch.fnmatchcase(service, p) for p in self.services)
                and any(fnmatch.fnmatchcase(env, p) for p in self.envs)
                and all(labels.get(k) == v for k, v in self.match.items())
                and all(re.fullmatch(p, labels.get(k, "")) for k, p in self.match_re.items()))

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match.items()]
        parts += [f"{k}=~{v}" for k, v in self.match_re.items()]
        return "{" + ", ".join(parts) + "}" + f" services={self.services} envs={self.envs}"


class AlertsConfig(Model):
    """Which alerts may trigger a rollback. No rules: alerts never act."""
    rollback: list[AlertRule] = Field(default_factory=list)
    identity: UserName = Field("alertmanager", description="who the operations are started as")
    signing_key: str | None = Field(None, description=(
        "the receiver's own key, listed for kepler-system in identity.allowed_signers: it "
        "signs each action and its rollback as `identity` (relative: inside the Kepler home)"))
    abort_canary: bool = Field(True, description="a running canary is aborted instead")


# --- the AlertAction workflow -----------------------------------------------------------------

class AlertActionRequest(SignedRequest):
    service: str
    env: str
    alertname: str = Field("", max_length=200)
    fingerprint: str
    starts_at: datetime
    summary: str = Field("", max_length=1000)
    rule: str = ""
    abort_canary: bool = True
    rollback: RollbackRequest | None = Field(None, description=(
        "the rollback this action starts, signed by the receiver (rollback_of(this)); "
        "None: started unsigned (no key configured)"))

    def subject(self) -> Subject:
        return Subject(self.service, self.env, self.alertname or self.fingerprint, self.requested_by)

    def own_workflow_id(self) -> str:
        return alert_workflow_id(self.service, self.env, self.fingerprint, self.starts_at)

    def describe(self, operation: str) -> str:
        return f"alert {self.alertname} firing for {self.service} in {self.env}"


def rollback_of(req: AlertActionRequest) -> RollbackRequest:
    """The rollback an alert starts: to the previous version, requested by the receiver."""
    why = f"alert {req.alertname or '?'} ({req.fingerprint}) firing" + (
        f": {req.summary}" if req.summary else "")
    return RollbackRequest(service=req.service, env=req.env, target="previous",
                           requested_by=req.requested_by, reason=why[:500])


class AlertOutcome(Model):
    action: Literal["rollback_started", "canary_aborted", "busy"]
    workflow_id: str
    detail: str


def alert_workflow_id(service: str, env: str, fingerprint: str, starts_at: datetime) -> str:
    return f"alert-{service}@{env}-{fingerprint}-{int(starts_at.timestamp())}"


def triage(alert: Alert, config: AlertsConfig, envs: list[str]) -> tuple[AlertActionRequest | None, str]:
    """(the action to take, '') or (None, why nothing is done)."""
    if alert.status != "firing":
        return None, "resolved: nothing to do"
    service, env = alert.labels.get(SERVICE_LABEL), alert.labels.get(ENV_LABEL)
    if not service or not env:
        return None, f"no {SERVICE_LABEL}/{ENV_LABEL} labels: not Kepler's"
    try:
        service_name(service)
        env_name(env)
    except ValueError as e:
        return None, f"bad labels: {e}"
    if env not in envs:
        return None, f"{ENV_LABEL}: unknown environment {env!r}"
    rule = next((r for r in config.rollback if r.matches(service, env, alert.labels)), None)
    if rule is None:
        return None, "no rule in kepler.yaml alerts.rollback matches: nothing to do"
    return AlertActionRequest(
        service=service, env=env, alertname=alert.labels.get("alertname", "")[:200],
        fingerprint=alert.fingerprint, starts_at=alert.startsAt,
        summary=(alert.annotations.get("summary") or alert.annotations.get("description")
                 or "")[:1000],
        rule=rule.describe(), requested_by=config.identity,
        abort_canary=config.abort_canary), ""
