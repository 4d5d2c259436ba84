"""Freeze windows: times when nothing new may be released to an environment.

Two kinds: the platform's windows in kepler.yaml (`freeze.<env>.windows`: a cron start
and a duration, or fixed dates, each with a reason) and ad-hoc freezes (`kepler freeze
--env prod --for 2h --reason ...`: the workflow `freeze@<env>`, whose life is the freeze).
During either, releases, promotions, canaries, trains and scheduled releases are refused,
or wait for the end (`after_freeze`), or go through with a break-glass approval by two
of the environment's approvers other than the requester. Rollbacks never wait.

Everything here is pure (workflows evaluate windows at workflow.now() with it).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kepler import cron
from kepler.identity import SignedStatement
from kepler.validation import Duration, EnvName, UserName
from kepler.workloads import Model
from kepler.requests import SignedRequest, Subject

FREEZE_PREFIX = "freeze@"
EVERY_SERVICE = "*"  # what a freeze's search attributes and signed request name as service
# an ad-hoc freeze's length (`--for`)
MIN_ADHOC, MAX_ADHOC = timedelta(minutes=1), timedelta(days=7)
# a cron window's duration, and a fixed window's length
MIN_WINDOW, MAX_CRON_WINDOW, MAX_FIXED_WINDOW = timedelta(minutes=1), timedelta(days=14), timedelta(days=90)
# how far ahead a cron window's starts are looked at for one that would never end
LOOKAHEAD = timedelta(days=366)
BREAK_GLASS_APPROVALS = 2  # at least; more when the environment's minimum is higher
BREAK_GLASS = "break-glass"  # what a break-glass gate's signed approvals name as operation


def freeze_workflow_id(env: str) -> str:
    return f"{FREEZE_PREFIX}{env}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class FreezeWindow(Model):
    """One platform window: `cron` + `duration`, or `start` + `end` (UTC unless an offset is given)."""
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
    reason: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(None, max_length=200, description="when each window starts (UTC)")
    duration: Duration | None = Field(None, description="how long each cron window lasts")
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else cron.validate(value)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @model_validator(mode="after")
    def _bounded(self) -> "FreezeWindow":
        if self.cron is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("cron: a window has a cron start or fixed dates, not both")
            if self.duration is None:
                raise ValueError("duration: a cron window needs a duration (when it ends)")
            if not MIN_WINDOW <= self.duration <= MAX_CRON_WINDOW:
                raise ValueError(f"duration: must be between {MIN_WINDOW} and "
                                 f"{MAX_CRON_WINDOW.days} days (got {self.duration})")
            self._ends_before_next_start()
        elif self.start is not None or self.end is not None:
            if self.duration is not None:
                raise ValueError("duration: only a cron window has one (fixed dates have an end)")
            if self.start is None or self.end is None:
                raise ValueError(f"{'end' if self.end is None else 'start'}: a fixed window needs "
                                 "both start and end")
            if self.end <= self.start:
                raise ValueError("end: must be after start")
            if self.end - self.start > MAX_FIXED_WINDOW:
                raise ValueError(f"end: a fixed window lasts at most {MAX_FIXED_WINDOW.days} days")
        else:
            raise ValueError("cron: a window needs cron and duration, or start and end")
        return self

    def _ends_before_next_start(self) -> None:
        """A window that lasts until the next one starts never ends: refused."""
        assert self.cron is not None and self.duration is not None
        begin = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a leap year: February 29 fires too
        previous = None
        for at in cron.fires(self.cron, begin, begin + LOOKAHEAD):
            if previous is not None and at - previous <= self.duration:
                raise ValueError(f"duration: {self.duration} is not shorter than the "
                                 f"{at - previous} between two starts of {self.cron!r}: the window "
                                 "would never end")
            previous = at

    def active_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(since, until) of this window if `now` is inside it."""
        if self.cron is None:
            assert self.start is not None and self.end is not None
            return (self.start, self.end) if self.start <= now < self.end else None
        assert self.duration is not None
        started = list(cron.fires(self.cron, now - self.duration + timedelta(microseconds=1),
                                  now + timedelta(microseconds=1)))
        return (started[-1], started[-1] + self.duration) if started else None

    def spans(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """(since, until) of each time this window is in force that overlaps [start, end)
        (the console's freeze calendar)."""
        if self.cron is None:
            assert self.start is not None and self.end is not None
            return [(self.start, self.end)] if self.start < end and self.end > start else []
        assert self.duration is not None
        return [(at, at + self.duration) for at in
                cron.fires(self.cron, start - self.duration + timedelta(microseconds=1), end)]

    def describe(self) -> str:
        if self.cron is not None:
            return f"{self.cron} for {self.duration}"
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


class EnvironmentFreeze(Model):
    """`freeze.<env>` in kepler.yaml."""
    model_config = ConfigDict(extra="forbid")

    windows: list[FreezeWindow] = Field(default_factory=list, max_length=50)

    @field_validator("windows")
    @classmethod
    def _unique(cls, value: list[FreezeWindow]) -> list[FreezeWindow]:
        names = [w.name for w in value]
        if len(names) != len(set(names)):
            raise ValueError("window names must be unique")
        return value


class ActiveFreeze(Model):
    """A freeze in force now: a platform window or an ad-hoc freeze."""
    env: str
    kind: Literal["window", "ad-hoc"]
    name: str  # the window's name, or freeze@<env>
    reason: str
    since: datetime
    until: datetime
    by: str = ""  # an ad-hoc freeze's verified requester
    run_id: str = ""  # an ad-hoc freeze's run (an unfreeze names it)

    def describe(self) -> str:
        what = f"window {self.name!r}" if self.kind == "window" else f"{self.name} (by {self.by})"
        return (f"{self.env} is frozen by {what}: {self.reason}; it ends at "
                f"{self.until:%Y-%m-%d %H:%M:%S} UTC")


def refusal(frozen: ActiveFreeze) -> str:
    """What a change refused by a freeze is told (exit 3)."""
    return (f"{frozen.describe()}. Rollbacks are allowed; --after-freeze waits for the end; "
            "--break-glass --reason TEXT asks two approvers to let it through")


def window_at(config: EnvironmentFreeze | None, env: str, now: datetime) -> ActiveFreeze | None:
    """The platform window in force at `now` that ends last, if any."""
    found: ActiveFreeze | None = None
    for w in config.windows if config else []:
        span = w.active_at(now)
        if span and (found is None or span[1] > found.until):
            found = ActiveFreeze(env=env, kind="window", name=w.name, reason=w.reason,
                                 since=span[0], until=span[1])
    return found


def in_force(config: EnvironmentFreeze | None, adhoc: list[ActiveFreeze], env: str,
             now: datetime) -> ActiveFreeze | None:
    """The freeze in force at `now` (a window, or an ad-hoc freeze not yet over), the one
    that ends last; None when the environment is open."""
    candidates = [f for f in adhoc if f.since <= now < f.until]
    window = window_at(config, env, now)
    if window is not None:
        candidates.append(window)
    return max(candidates, key=lambda f: f.until) if candidates else None


def open_at(config: EnvironmentFreeze | None, adhoc: list[ActiveFreeze], env: str,
            now: datetime) -> datetime:
    """When the environment is next open: the end of every freeze in force, chained
    (a window may start as another ends)."""
    at = now
    for _ in range(100):
        frozen = in_force(config, adhoc, env, at)
        if frozen is None:
            return at
        at = frozen.until
    return at


class FreezeOptions(Model):
    """What a release, promotion or canary request may say about freezes (signed with it)."""
    after_freeze: bool = Field(False, description=(
        "during a freeze, wait (a durable timer) and start when it ends, instead of being refused"))
    break_glass: bool = Field(False, description=(
        "go through a freeze with the approval of two of the environment's approvers other "
        "than the requester (needs a reason; notified to every channel, marked in history)"))

    @model_validator(mode="after")
    def _freeze_options(self) -> "FreezeOptions":
        if self.break_glass and not getattr(self, "reason", "").strip():
            raise ValueError("reason: --break-glass needs a reason (--reason TEXT)")
        if self.break_glass and self.after_freeze:
            raise ValueError("break_glass: --break-glass goes through a freeze, --after-freeze "
                             "waits for its end: one of the two")
        return self


class FreezeRequest(SignedRequest):
    """`kepler freeze --env ENV --for 2h --reason TEXT`: an ad-hoc freeze, starting now."""
    env: EnvName
    duration: Duration = Field(description="how long the freeze lasts (--for)")
    reason: str = Field(min_length=1, max_length=500)

    def subject(self) -> Subject:
        return Subject(EVERY_SERVICE, self.env, "", self.requested_by)

    def own_workflow_id(self) -> str:
        return freeze_workflow_id(self.env)

    def describe(self, operation: str) -> str:
        return f"freeze {self.env} for {self.duration} by {self.requested_by}: {self.reason}"

    @field_validator("duration")
    @classmethod
    def _for(cls, value: timedelta) -> timedelta:
        if not MIN_ADHOC <= value <= MAX_ADHOC:
            raise ValueError(f"--for must be between {MIN_ADHOC} and {MAX_ADHOC.days} days "
                             f"(got {value})")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a freeze needs a reason (--reason TEXT)")
        return value


class UnfreezeRequest(Model):
    """`kepler unfreeze --env ENV`: the `unfreeze` update, signed for that freeze's run."""
    requested_by: UserName
    comment: str = Field("", max_length=500)
    signed: SignedStatement | None = None


class FreezeReport(Model):
    env: str
    outcome: str
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None  # planned end
    ended_at: datetime | None = None
    ended_by: str = ""  # who unfroze it; "" when it ran its course
    error: str = ""
