"""Scheduled releases: a Temporal Schedule per service and environment.

A schedule's workflow ids get the fire time appended, so a schedule cannot start
ReleaseVersion under the `<service>@<env>` lock itself. It starts ScheduledRelease,
which starts ReleaseVersion as a child under that id: a nightly release never runs
alongside a manual one (it is skipped, and says why), and with overlap policy SKIP
a fire while the previous nightly still runs is skipped too.
"""

from __future__ import annotations

from pydantic import Field

from kepler.models import Model, ReleaseReport, ReleaseRequest
from kepler.requests import OperationRequest, Subject


def schedule_id(service: str, env: str) -> str:
    return f"release-{service}@{env}"


def fire_workflow_id(service: str, env: str) -> str:
    """The id a schedule's ScheduledRelease starts under (the schedule appends the fire time)."""
    return f"scheduled-{service}@{env}"


class ScheduledReleaseRequest(OperationRequest):
    release: ReleaseRequest
    cron: str = Field("", max_length=200)

    def subject(self) -> Subject:
        rel = self.release
        return Subject(rel.service, rel.env, rel.version(), rel.requested_by)

    def own_workflow_id(self) -> str:
        return fire_workflow_id(self.release.service, self.release.env)

    def describe(self, operation: str) -> str:
        who = self.subject()
        return f"scheduled release {who.service} {who.version} to {who.env} ({self.cron})"


class ScheduledReleaseReport(Model):
    outcome: str  # succeeded | failed | rolled_back | skipped | ...
    release_id: str = ""
    detail: str = ""
    report: ReleaseReport | None = None
