"""Notifications: e-mail (SMTP), Slack incoming webhooks, WeCom group robots, signed
generic JSON webhooks and the worker log, routed per event/service/environment by
`notifications:` in kepler.yaml.

Delivery failure raises a retryable error, so the workflow retries a bounded
number of times and then records the failure in its status; it never fails an
operation. Channels already reached are remembered in the heartbeat details, so
a retry does not send them twice. Secrets never appear in a payload or a log.
"""

from __future__ import annotations

import hashlib
import html
import hmac
import json
import logging
import os
import re
import smtplib
import ssl
from email.message import EmailMessage

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import non_retryable, retryable
from activities.http_clients import shared_httpx
from kepler.notifications import (
    EmailChannel, LogChannel, Notification, SlackChannel, WebhookChannel, WeComChannel,
)
from kepler.settings import Platform, Secrets

log = logging.getLogger("kepler.notify")

TITLES = {
    "started": "started", "awaiting_approval": "awaiting approval",
    "approval_reminder": "still awaiting approval", "succeeded": "succeeded",
    "rolled_back": "rolled back", "failed": "failed", "expired": "approval expired",
    "rejected": "rejected", "cancelled": "cancelled", "created": "created",
    "soaking": "decommission soaking", "restored": "restored",
    "decommissioned": "decommissioned", "promoted": "promoted", "aborted": "aborted",
    "frozen": "frozen", "unfrozen": "unfrozen", "break_glass": "BREAK-GLASS",
}
SIGNATURE_HEADER = "X-Kepler-Signature"
APPROVE_ACTION, REJECT_ACTION = "kepler_approve", "kepler_reject"


def title(note: Notification) -> str:
    return f"{note.service}@{note.env}: {TITLES.get(note.event, note.event.replace('_', ' '))}"


def ui_link(platform: Platform, note: Notification) -> str:
    if not note.link or note.link.startswith(("http://", "https://")):
        return note.link
    t = platform.temporal
    return f"{t.ui_url.rstrip('/')}/namespaces/{t.namespace}/workflows/{note.link}"


def slack_escape(text: str) -> str:
    """Slack mrkdwn: &, < and > are control characters (`<!channel>`, `<url|label>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_WECOM_SPECIAL = re.compile(r"([\\`*_\[\]<>])")  # no [link](...), <font>, <@mention>


def wecom_escape(text: str) -> str:
    """WeCom markdown: links, emphasis, quotes, <font> and <@user> mentions are inert."""
    return _WECOM_SPECIAL.sub(r"\\\1", text)


def slack_payload(note: Notification, link: str) -> dict:
    """Blocks; awaiting approval gets approve/reject buttons whose value is `service@env`."""
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"*{title(note)}*\n{slack_escape(note.text)}"}},
    ]
    if link:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"<{link}|Open in the Temporal UI>"}]})
    if note.event in ("awaiting_approval", "approval_reminder"):
        value = f"{note.service}@{note.env}" + (f"/{note.run_id}" if note.run_id else "")
        blocks.append({"type": "actions", "block_id": "kepler_approval", "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    return {"text": f"{title(note)}: {slack_escape(note.text)}", "blocks": blocks}


def wecom_payload(note: Notification, link: str) -> dict:
    content = f"**{title(note)}**\n> {wecom_escape(note.text)}"
    if link:
        content += f"\n[Open in the Temporal UI]({link})"
    return {"msgtype": "markdown", "markdown": {"content": content}}


def webhook_body(note: Notification, link: str, delivery_id: str) -> bytes:
    data = {"id": delivery_id, "event": note.event, "service": note.service, "env": note.env,
            "text": note.text, "workflow_id": note.link, "link": link}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def email_message(channel: EmailChannel, note: Notification, link: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[Kepler] {title(note)}"
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg.set_content(note.text + (f"\n\n{link}\n" if link else "\n"))
    link_html = f'<p><a href="{html.escape(link)}">Open in the Temporal UI</a></p>' if link else ""
    msg.add_alternative(f"<p>{html.escape(note.text)}</p>{link_html}", subtype="html")
    return msg


class DeliveryError(Exception):
    """One channel could not be reached; the message never contains a secret."""


class NotifyActivities:
    def __init__(self, platform: Platform, secrets: Secrets | None = None) -> None:
        self.platform = platform
        self.secrets = secrets or Secrets()

    @activity.defn(name="notify")
    def notify(self, note: Notification) -> list[str]:
        """Send `note` to the channels routed to it; returns the channels reached.
        Raises (retryable) if any channel failed; channels reached on an earlier
        attempt are not sent again."""
        config = self.platform.notifications
        names = config.channels_for(note.event, note.service, note.env)
        if not names and not config.routes:
            log.info("[%s] %s: %s", note.event, title(note), note.text)
            return ["log"]
        info = activity.info() if activity.in_activity() else None
        details = list(info.heartbeat_details) if info and info.heartbeat_details else []
        reached: list[str] = list(details[0]) if details else []
        delivery_id = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}" if info else ""
        link = ui_link(self.platform, note)
        problems: list[str] = []
        fixable = False  # a retry may help (unreachable, 5xx) vs. a configuration problem
        for name in names:
            if name in reached:
                continue
            try:
                self._send(config.channels[name], note, link, delivery_id)
            except (DeliveryError, ApplicationError) as e:
                fixable = fixable or isinstance(e, DeliveryError)
                problems.append(f"{name}: {e}")
                log.warning("notification %s to %s failed: %s", note.event, name, e)
                continue
            reached.append(name)
            if info:
                activity.heartbeat(reached)
        if problems:
            if fixable:
                raise retryable("; ".join(problems), "NotificationFailed")
            raise non_retryable("InvalidInput", "; ".join(problems))
        return reached

    # --- channels -------------------------------------------------------------------------

    def _send(self, channel: object, note: Notification, link: str, delivery_id: str) -> None:
        if isinstance(channel, LogChannel):
            log.info("[%s] %s: %s %s", note.event, title(note), note.text, link)
        elif isinstance(channel, EmailChannel):
            self._email(channel, note, link)
        elif isinstance(channel, SlackChannel):
            self._post(channel, json.dumps(slack_payload(note, link)).encode(), {}, "slack")
        elif isinstance(channel, WeComChannel):
            self._post(channel, json.dumps(wecom_payload(note, link)).encode(), {}, "wecom")
        elif isinstance(channel, WebhookChannel):
            secret = self.secrets.webhook_secret
            if secret is None:
                raise non_retryable("InvalidInput", "KEPLER_WEBHOOK_SECRET is not set in the "
                                    "worker's environment: webhooks are always signed")
            body = webhook_body(note, link, delivery_id)
            self._post(channel, body, {SIGNATURE_HEADER: sign(
                secret.get_secret_value().encode(), body), "X-Kepler-Event": note.event,
                "X-Kepler-Delivery": delivery_id}, "webhook")

    @staticmethod
    def _url(channel: SlackChannel | WeComChannel | WebhookChannel) -> str:
        if channel.url:
            return channel.url
        url = os.environ.get(channel.url_env or "")
        if not url:
            raise non_retryable("InvalidInput", f"{channel.url_env} is not set in the worker's "
                                "environment")
        return url

    def _post(self, channel: SlackChannel | WeComChannel | WebhookChannel, body: bytes,
              headers: dict[str, str], kind: str) -> None:
        url = self._url(channel)
        where = httpx.URL(url).copy_with(path="/", query=None)  # never log a token in a path
        try:
            response = shared_httpx().post(
                url, content=body, timeout=channel.timeout_seconds,
                headers={"Content-Type": "application/json", **headers})
        except httpx.HTTPError as e:
            raise DeliveryError(f"{kind} at {where.host}:{where.port or ''} unreachable: "
                                f"{type(e).__name__}") from None
        if response.status_code >= 300:
            raise DeliveryError(f"{kind} answered HTTP {response.status_code}: "
                                f"{response.text[:200]}")
        if kind == "wecom":  # WeCom answers 200 with an error code in the body
            try:
                code = response.json().get("errcode", 0)
            except ValueError:
                code = 0
            if code:
                raise DeliveryError(f"wecom answered errcode {code}: {response.text[:200]}")

    def _email(self, channel: EmailChannel, note: Notification, link: str) -> None:
        msg = email_message(channel, note, link)
        try:
            with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_seconds) as smtp:
                if channel.security == "starttls":
                    context = ssl.create_default_context(cafile=channel.ca_file)
                    smtp.starttls(context=context)
                if channel.username:
                    password = self.secrets.smtp_password
                    if password is None:
                        raise non_retryable("InvalidInput", "KEPLER_SMTP_PASSWORD is not set in "
                                            "the worker's environment")
                    smtp.login(channel.username, password.get_secret_value())
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as e:
            detail = e.smtp_error.decode(errors="replace") if isinstance(
                e, smtplib.SMTPResponseException) and isinstance(e.smtp_error, bytes) else type(e).__name__
            raise DeliveryError(f"email via {channel.host}:{channel.port} failed: {detail}") from None
