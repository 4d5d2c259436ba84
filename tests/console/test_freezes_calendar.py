"""The freezes page's calendar, without a server: the times each platform window is in
force (FreezeWindow.spans) and ad-hoc freezes, laid out by environment and day with the
hours they hold."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from kepler.clients.freezes import ListedFreeze
from kepler.freeze import EnvironmentFreeze, FreezeWindow
from starter.console.views.freezes import Span, calendar, spans_of

MONDAY = datetime(2025, 3, 3, tzinfo=timezone.utc)  # a Monday


def utc(day: int, hour: int, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=timezone.utc)


FRIDAYS = FreezeWindow(name="weekend", reason="no weekend deploys", cron="0 18 * * 5",
                       duration=timedelta(hours=62))
XMAS = FreezeWindow(name="xmas", reason="holidays", start=utc(12, 12), end=utc(20, 0))


def test_a_window_is_in_force_at_each_of_its_times_that_overlap_the_range() -> None:
    # the weekend before runs into Monday morning: it overlaps the range too
    assert FRIDAYS.spans(MONDAY, MONDAY + timedelta(days=14)) == [
        (utc(28, 18, month=2), utc(3, 8)), (utc(7, 18), utc(10, 8)), (utc(14, 18), utc(17, 8))]
    assert FRIDAYS.spans(utc(9, 12), utc(9, 13)) == [(utc(7, 18), utc(10, 8))]
    assert FRIDAYS.spans(utc(10, 8), utc(11, 0)) == []  # it ended as the range starts
    assert XMAS.spans(MONDAY, MONDAY + timedelta(days=9, hours=12)) == []  # ends at its start
    assert XMAS.spans(MONDAY, MONDAY + timedelta(days=14)) == [(XMAS.start, XMAS.end)]


def test_the_calendar_marks_each_frozen_day_with_the_reasons_and_hours() -> None:
    adhoc = ListedFreeze(env="staging", kind="ad-hoc", name="freeze@staging", reason="incident 7",
                         active=True, since=MONDAY + timedelta(hours=9, minutes=30),
                         until=MONDAY + timedelta(hours=11, minutes=30), by="carol")
    spans = spans_of(["prod", "staging"], {"prod": EnvironmentFreeze(windows=[FRIDAYS, XMAS])},
                     [adhoc], MONDAY, MONDAY + timedelta(days=14))
    assert [(s.env, s.name) for s in spans] == [("prod", "weekend"), ("staging", "freeze@staging"),
                                                ("prod", "weekend"), ("prod", "xmas"),
                                                ("prod", "weekend")]
    prod, staging = calendar(["prod", "staging"], spans, MONDAY.date())
    assert [c.day for c in prod.cells][:2] == [date(2025, 3, 3), date(2025, 3, 4)] and len(prod.cells) == 14
    frozen = {c.day.day: [(s.name, c.hours(s)) for s in c.spans] for c in prod.cells if c.frozen}
    assert frozen == {3: [("weekend", "until 08:00")], 7: [("weekend", "from 18:00")], 8: [("weekend", "all day")],
                      9: [("weekend", "all day")], 10: [("weekend", "until 08:00")],
                      12: [("xmas", "from 12:00")], 13: [("xmas", "all day")],
                      14: [("xmas", "all day"), ("weekend", "from 18:00")],
                      15: [("xmas", "all day"), ("weekend", "all day")],
                      16: [("xmas", "all day"), ("weekend", "all day")]}
    today = staging.cells[0]
    assert [today.hours(s) for s in today.spans] == ["09:30–11:30"]
    assert [c.frozen for c in staging.cells].count(True) == 1


def test_a_freeze_of_another_environment_or_out_of_range_is_not_shown() -> None:
    far = Span("prod", "ad-hoc", "freeze@prod", "later", MONDAY + timedelta(days=20),
               MONDAY + timedelta(days=21))
    other = Span("qa", "ad-hoc", "freeze@qa", "qa", MONDAY, MONDAY + timedelta(hours=1))
    (prod,) = calendar(["prod"], [far, other], MONDAY.date())
    assert not any(c.frozen for c in prod.cells)
