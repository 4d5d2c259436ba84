"""Notification channels and routes (`notifications:` in kepler.yaml).

```yaml
notifications:
  channels:
    ops-mail: {type: email, host: smtp.example.com, port: 587, security: starttls,
               sender: kepler@example.com, to: [ops@example.com], username: kepler}
    team-slack: {type: slack, url_env: KEPLER_SLACK_WEBHOOK_URL}
    wecom: {type: wecom, url_env: KEPLER_WECOM_WEBHOOK_URL}
    audit: {type: webhook, url: https://audit.example.com/kepler}
    worker-log: {type: log}
  routes:
    - channels: [team-slack]
      events: [awaiting_approval, failed, rolled_back]
      services: ["shop*"]
      envs: [prod]
```

A notification goes to every channel of every route that matches its event,
service and environment (shell-style globs). Secrets (SMTP password, the
webhook signing secret) come only from the environment; a URL that embeds a
token can also be read from the environment (`url_env`).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from kepler.models import Model

# Every event a workflow emits. Routes may only name these (or "*").
EVENTS: tuple[str, ...] = (
    "started", "awaiting_approval", "approval_reminder", "succeeded", "rolled_back", "failed",
    "expired", "rejected", "cancelled", "created", "soaking", "restored", "decommissioned",
    "promoted", "aborted", "frozen", "unfrozen", "break_glass",
)
# Sent to every channel whatever the routes say: a change let through a freeze.
EVERY_CHANNEL = ("break_glass",)


class Notification(Model):
    """What a workflow asks the notify activity to send (never a secret)."""
    event: str
    service: str
    env: str
    text: str
    link: str = ""  # the workflow id; the activity turns it into a Temporal UI link
    run_id: str = ""  # the run: an approve button approves this run and no other


class _Channel(Model):
    pass


class _UrlChannel(_Channel):
    url: str | None = Field(None, pattern=r"^https?://\S+$")
    url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="name of the env var holding the URL")
    timeout_seconds: float = Field(10, gt=0, le=120)

    @model_validator(mode="after")
    def _one_url(self) -> "_UrlChannel":
        if bool(self.url) == bool(self.url_env):
            raise ValueError("set exactly one of url and url_env")
        return self


class SlackChannel(_UrlChannel):
    type: Literal["slack"]


class WeComChannel(_UrlChannel):
    type: Literal["wecom"]


class WebhookChannel(_UrlChannel):
    """Generic JSON, signed: X-Kepler-Signature: sha256=HMAC(KEPLER_WEBHOOK_SECRET, body)."""
    type: Literal["webhook"]


class EmailChannel(_Channel):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(25, ge=1, le=65535)
    security: Literal["starttls", "plain"] = "starttls"
    ca_file: str | None = Field(None, description="CA bundle to verify the server (STARTTLS)")
    username: str | None = Field(None, description="password from KEPLER_SMTP_PASSWORD")
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    timeout_seconds: float = Field(10, gt=0, le=120)


class LogChannel(_Channel):
    """The worker's log: handy in the sandbox."""
    type: Literal["log"]


Channel = Annotated[Union[EmailChannel, SlackChannel, WeComChannel, WebhookChannel, LogChannel],
                    Field(discriminator="type")]


class Route(Model):
    channels: list[str] = Field(min_length=1)
    events: list[str] = Field(default_factory=lambda: ["*"])
    services: list[str] = Field(default_factory=lambda: ["*"], description="globs")
    envs: list[str] = Field(default_factory=lambda: ["*"], description="globs; 'all' for "
                            "create and decommission")

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e != "*" and e not in EVENTS]
        if unknown:
            raise ValueError(f"unknown event(s) {', '.join(unknown)} (known: {', '.join(EVENTS)})")
        return value

    def matches(self, event: str, service: str, env: str) -> bool:
        return (("*" in self.events or event in self.events)
                and any(fnmatchcase(service, g) for g in self.services)
                and any(fnmatchcase(env, g) for g in self.envs))


class NotificationsConfig(Model):
    channels: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")], Channel] = \
        Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_channels(self) -> "NotificationsConfig":
        for i, route in enumerate(self.routes):
            missing = [c for c in route.channels if c not in self.channels]
            if missing:
                raise ValueError(f"routes[{i}] names undefined channel(s) {', '.join(missing)} "
                                 f"(defined: {', '.join(self.channels) or 'none'})")
        return self

    def channels_for(self, event: str, service: str, env: str) -> list[str]:
        """Channel names routed to this notification, in route order, each once (every
        channel for an EVERY_CHANNEL event)."""
        if event in EVERY_CHANNEL:
            return list(self.channels)
        names: list[str] = []
        for route in self.routes:
            if route.matches(event, service, env):
                names += [c for c in route.channels if c not in names]
        return names
