"""Cron schedules as Kubernetes CronJobs read them: five fields (minute hour
day-of-month month day-of-week) with lists, ranges, steps and names, or a macro
(@hourly, @daily, ...). Validated in the service spec before it reaches a cluster
(the sandbox's CronJob controller has its own reading, as a real cluster has)."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))
NAMES = {3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
         4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}
_PART = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


def _value(token: str, index: int) -> int:
    names = NAMES.get(index)
    if names and token in names:
        return names.index(token) + (1 if index == 3 else 0)
    if not token.isdigit():
        raise ValueError(f"{FIELDS[index][0]}: {token!r} is not a number"
                         + (f" or a name ({', '.join(names)})" if names else ""))
    return int(token)


def _field(text: str, index: int) -> set[int]:
    name, low, high = FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        m = _PART.fullmatch(part)
        if not m:
            raise ValueError(f"{name}: {part!r} is not a value, range, list or step")
        base, step_text = m.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"{name}: step must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, b = base.split("-")
            start, end = _value(a, index), _value(b, index)
        else:
            start = _value(base, index)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"{name}: {base!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # both 0 and 7 are Sunday
        values = (values - {7}) | {0}
    return values


def parse(schedule: str) -> list[set[int]]:
    """The allowed values of each of the five fields; ValueError naming the field."""
    text = MACROS.get(schedule.strip().lower(), schedule.strip().lower())
    if text.startswith(("tz=", "cron_tz=")):
        raise ValueError("a time zone inside the schedule is not supported")
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"must have 5 fields (minute hour day-of-month month day-of-week) or be "
                         f"one of {', '.join(MACROS)} (got {schedule[:80]!r})")
    return [_field(p, i) for i, p in enumerate(parts)]


def validate(schedule: str) -> str:
    parse(schedule)
    return schedule.strip()


def _day_matches(sets: list[set[int]], day: date) -> bool:
    """Cron's day rule: when both day-of-month and day-of-week are restricted, either matches."""
    _, _, doms, months, dows = sets
    if day.month not in months:
        return False
    dom_any, dow_any = doms >= set(range(1, 32)), dows >= set(range(7))
    dom, dow = day.day in doms, (day.weekday() + 1) % 7 in dows  # cron: Sunday is 0
    if dom_any or dow_any:
        return dom and dow
    return dom or dow


def fires(schedule: str, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every minute in [start, end) at which `schedule` fires, in UTC, in order (pure: a
    workflow computes freeze windows with it)."""
    sets = parse(schedule)
    hours, minutes = sorted(sets[1]), sorted(sets[0])
    day = start.astimezone(timezone.utc).date()
    while datetime.combine(day, time(), timezone.utc) < end:
        if _day_matches(sets, day):
            for h in hours:
                for m in minutes:
                    at = datetime(day.year, day.month, day.day, h, m, tzinfo=timezone.utc)
                    if at >= end:
                        return
                    if at >= start:
                        yield at
        day += timedelta(days=1)
