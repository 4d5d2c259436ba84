"""Notifications. For now one channel: the worker's log (issue #7 adds e-mail, Slack,
WeCom and signed webhooks)."""

from __future__ import annotations

import logging

from temporalio import activity

from kepler.models import Model

log = logging.getLogger("kepler.notify")


class Notification(Model):
    event: str
    service: str
    env: str
    text: str
    link: str = ""


class NotifyActivities:
    @activity.defn(name="notify")
    def notify(self, note: Notification) -> list[str]:
        """Send `note` to the channels routed to it; returns the channels reached."""
        log.info("[%s] %s@%s: %s %s", note.event, note.service, note.env, note.text, note.link)
        return ["log"]
