"""Charts the console draws on the server, as inline SVG: whole without JavaScript, drawn
again whenever a page's `live` block is, and within the CSP (presentation attributes only,
never `style`). Every text is escaped; every chart has a <title>, a <desc> and an
aria-label saying what it shows, and says "no data" rather than drawing an empty frame.

Two kinds: `line_chart` (values over time, or a step chart such as a canary's weight,
with optional horizontal thresholds) and `bar_chart` (one value a period)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, TOP, BOTTOM = 52, 14, 30  # room for the y labels (left) and the time or period labels
RIGHT, RIGHT_PLAIN, RIGHT_BARS = 92, 36, 12  # room for threshold labels; for "UTC"; none
COLOURS = ("#2451b3", "#1c7c3c", "#a35f00", "#7b3fb3", "#0f7c8c")
THRESHOLD = "#b3261e"
GRID, MUTED = "#d8dce5", "#5b6478"
MAX_MARKERS = 60  # points drawn as dots (each with its value as a tooltip) up to this many
Format = Callable[[float], str]
Ticks = Callable[[float, float], list[float]]
# steps of a duration axis, in seconds: 1 s to a week
NICE_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                43200, 86400, 172800, 604800)


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[datetime, float | None]]  # in time order; None: no value (a gap)


@dataclass(frozen=True)
class Threshold:
    label: str  # e.g. "max 0.05"
    value: float


@dataclass(frozen=True)
class Bar:
    label: str  # the period, e.g. "03 Mar"
    value: float | None  # None: nothing to measure in that period


def number(value: float) -> str:
    """A value as a label: four significant digits, whole numbers from 10 000 on."""
    if value != value:  # NaN
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """About `count` round values covering [lo, hi] (the first <= lo, the last >= hi)."""
    span = hi - lo
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= step * m:
            step *= m
            break
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def duration_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """`ticks` for seconds, on whole minutes, hours or days (not 6h 56m)."""
    step = next((s for s in NICE_SECONDS if (hi - lo) / s <= count), None)
    if step is None:  # longer than weeks: whole days
        return [d * 86400 for d in ticks(lo / 86400, hi / 86400, count)]
    return [float(i * step) for i in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def _domain(values: list[float], y_min: float | None, y_max: float | None) -> tuple[float, float]:
    lo = y_min if y_min is not None else min(values)
    hi = y_max if y_max is not None else max(values)
    if hi <= lo:  # one value: a band around it
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = (lo if y_min is not None else lo - pad), (hi if y_max is not None else hi + pad)
    return lo, hi


class _Frame:
    """The plot area of a WIDTH x HEIGHT view box and the value -> y mapping."""

    def __init__(self, lo: float, hi: float, width: int, height: int, right: int) -> None:
        self.width, self.height = width, height
        self.x0, self.x1 = LEFT, width - right
        self.y0, self.y1 = TOP, height - BOTTOM
        self.lo, self.hi = lo, hi

    def y(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)  # a value off the scale sits on its edge
        return round(self.y1 - (value - self.lo) / (self.hi - self.lo) * (self.y1 - self.y0), 1)


def _open(title: str, summary: str, width: int, height: int, kind: str) -> str:
    label = escape(f"{title}: {summary}" if summary else title)
    return (f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
            f'{height}" width="{width}" height="{height}" role="img" aria-label="{label}">'
            f"<title>{escape(title)}</title><desc>{escape(summary)}</desc>")


def _no_data(title: str, width: int, height: int, kind: str, note: str) -> Markup:
    return Markup(
        _open(title, note, width, height, kind)
        + f'<text class="no-data" x="{width / 2}" y="{height / 2}" text-anchor="middle" '
        f'fill="{MUTED}">{escape(note)}</text></svg>')


def _y_axis(frame: _Frame, values: list[float], fmt: Format) -> str:
    out = []
    for v in values:
        y = frame.y(v)
        out.append(f'<line x1="{frame.x0}" x2="{frame.x1}" y1="{y}" y2="{y}" stroke="{GRID}"/>'
                   f'<text x="{frame.x0 - 6}" y="{y + 4}" text-anchor="end" font-size="11" '
                   f'fill="{MUTED}">{escape(fmt(v))}</text>')
    return '<g class="axis">' + "".join(out) + "</g>"


def _time_format(span: timedelta) -> str:
    if span <= timedelta(minutes=10):
        return "%H:%M:%S"
    return "%H:%M" if span <= timedelta(days=2) else "%d %b"


def _time_axis(frame: _Frame, start: datetime, end: datetime, x: Callable[[datetime], float]) -> str:
    form, out = _time_format(end - start), []
    for i in range(4):
        at = start + (end - start) * i / 3
        anchor = ("start", "middle", "middle", "end")[i]
        out.append(f'<text x="{x(at)}" y="{frame.y1 + 18}" text-anchor="{anchor}" font-size="11" '
                   f'fill="{MUTED}">{escape(at.strftime(form))}</text>')
    out.append(f'<text x="{frame.x1 + 6}" y="{frame.y1 + 18}" font-size="11" fill="{MUTED}">UTC</text>')
    return '<g class="axis time">' + "".join(out) + "</g>"


def _path(points: list[tuple[float, float | None]], step: bool) -> str:
    """SVG path data through (x, y) points, broken where y is None."""
    parts, drawing = [], False
    for x, y in points:
        if y is None:
            drawing = False
            continue
        if not drawing:
            parts.append(f"M{x},{y}")
        elif step:
            parts.append(f"H{x}V{y}")
        else:
            parts.append(f"L{x},{y}")
        drawing = True
    return " ".join(parts)


def _threshold_lines(frame: _Frame, thresholds: Sequence[Threshold]) -> str:
    out = []
    for t in thresholds:
        y = frame.y(t.value)
        out.append(f'<g class="threshold"><line x1="{frame.x0}" x2="{frame.x1}" y1="{y}" y2="{y}" '
                   f'stroke="{THRESHOLD}" stroke-width="1.5" stroke-dasharray="6 4"/>'
                   f'<text x="{frame.x1 + 6}" y="{y + 4}" font-size="11" fill="{THRESHOLD}">'
                   f"{escape(t.label)}</text></g>")
    return "".join(out)


def _summary(series: Sequence[Series], thresholds: Sequence[Threshold], fmt: Format) -> str:
    said = []
    for s in series:
        known = [(at, v) for at, v in s.points if v is not None]
        if not known:
            said.append(f"{s.name}: no values")
            continue
        at, v = known[-1]
        values = [v for _, v in known]
        said.append(f"{s.name}: {len(known)} values from {fmt(min(values))} to {fmt(max(values))}, "
                    f"last {fmt(v)} at {at:%Y-%m-%d %H:%M:%S} UTC")
    said += [f"threshold {t.label}" for t in thresholds]
    return "; ".join(said)


def line_chart(title: str, series: Sequence[Series], thresholds: Sequence[Threshold] = (), *,
               step: bool = False, start: datetime | None = None, end: datetime | None = None,
               y_min: float | None = None, y_max: float | None = None, fmt: Format = number,
               width: int = WIDTH, height: int = HEIGHT) -> Markup:
    """Each series over time (a step chart with `step`: each value holds until the next,
    the last one until `end`), with a dashed line at each threshold. The time axis spans
    [start, end], by default the first and last points."""
    times = [at for s in series for at, _ in s.points]
    values = [v for s in series for _, v in s.points if v is not None]
    if not values:
        return _no_data(title, width, height, "line", "no data yet")
    start = start or min(times)
    end = max(end or max(times), start + timedelta(seconds=1))
    lo, hi = _domain(values + [t.value for t in thresholds], y_min, y_max)
    marks = ticks(lo, hi)
    frame = _Frame(min(lo, marks[0]) if y_min is None else lo,
                   max(hi, marks[-1]) if y_max is None else hi, width, height,
                   RIGHT if thresholds else RIGHT_PLAIN)
    seconds = (end - start).total_seconds()

    def x(at: datetime) -> float:
        at = min(max(at, start), end)
        return round(frame.x0 + (at - start).total_seconds() / seconds * (frame.x1 - frame.x0), 1)

    body = [_open(title, _summary(series, thresholds, fmt), width, height, "line"),
            _y_axis(frame, [m for m in marks if frame.lo <= m <= frame.hi], fmt),
            _time_axis(frame, start, end, x), _threshold_lines(frame, thresholds)]
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = [(x(at), None if v is None else frame.y(v)) for at, v in s.points]
        if step and points and points[-1][1] is not None:
            points.append((x(end), points[-1][1]))
        body.append(f'<g class="series"><path d="{_path(points, step)}" fill="none" '
                    f'stroke="{colour}" stroke-width="2"/>')
        if len(s.points) <= MAX_MARKERS:
            body += [f'<circle cx="{x(at)}" cy="{frame.y(v)}" r="3" fill="{colour}"><title>'
                     f'{escape(s.name)} {escape(fmt(v))} at {at:%H:%M:%S}</title></circle>'
                     for at, v in s.points if v is not None]
        body.append("</g>")
    if len(series) > 1:
        body += [f'<text class="legend" x="{frame.x0 + 8 + 110 * i}" y="{TOP - 2}" font-size="11" '
                 f'fill="{COLOURS[i % len(COLOURS)]}">{escape(s.name)}</text>'
                 for i, s in enumerate(series)]
    return Markup("".join(body) + "</svg>")


def bar_chart(title: str, bars: Sequence[Bar], *, fmt: Format = number, scale: Ticks = ticks,
              width: int = WIDTH, height: int = HEIGHT) -> Markup:
    """One bar a period, its value above it; a period without a value shows a dash. `scale`
    gives the axis' values (`duration_ticks` for seconds)."""
    values = [b.value for b in bars if b.value is not None]
    if not values:
        return _no_data(title, width, height, "bar", "no data")
    marks = scale(0.0, max(max(values), 0.0) or 1.0)
    if all(float(v).is_integer() for v in values):  # counts: no half a deploy on the axis
        marks = [m for m in marks if float(m).is_integer()]
    frame = _Frame(0.0, marks[-1], width, height, RIGHT_BARS)
    summary = "; ".join(f"{b.label}: {'no data' if b.value is None else fmt(b.value)}" for b in bars)
    body = [_open(title, summary, width, height, "bar"), _y_axis(frame, marks, fmt)]
    slot = (frame.x1 - frame.x0) / len(bars)
    for i, b in enumerate(bars):
        middle = round(frame.x0 + slot * (i + 0.5), 1)
        body.append(f'<text x="{middle}" y="{frame.y1 + 18}" text-anchor="middle" font-size="11" '
                    f'fill="{MUTED}">{escape(b.label)}</text>')
        if b.value is None:
            body.append(f'<text class="none" x="{middle}" y="{frame.y1 - 4}" text-anchor="middle" '
                        f'font-size="11" fill="{MUTED}">–</text>')
            continue
        top, wide = frame.y(b.value), round(slot * 0.6, 1)
        body.append(f'<g class="bar"><rect x="{round(middle - wide / 2, 1)}" y="{top}" '
                    f'width="{wide}" height="{round(frame.y1 - top, 1)}" fill="{COLOURS[0]}">'
                    f"<title>{escape(b.label)}: {escape(fmt(b.value))}</title></rect>"
                    f'<text x="{middle}" y="{top - 4}" text-anchor="middle" font-size="11" '
                    f'fill="{COLOURS[0]}">{escape(fmt(b.value))}</text></g>')
    return Markup("".join(body) + "</svg>")
