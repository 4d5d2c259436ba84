"""The console's server-drawn charts (starter/console/charts.py): values land inside the
view box, thresholds are drawn and named, no data says so, every text is escaped, and the
markup is well-formed SVG a screen reader can name."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from starter.console.charts import (
    HEIGHT, RIGHT_PLAIN, WIDTH, Bar, Series, Threshold, bar_chart, duration_ticks, line_chart,
    number, ticks,
)

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)
SVG = "{http://www.w3.org/2000/svg}"


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def coordinates(root: ET.Element) -> list[tuple[float, float]]:
    """Every point the chart draws: path vertices, dots, bars' corners."""
    found = []
    for path in root.iter(f"{SVG}path"):
        x = y = 0.0
        for cmd, a, b in re.findall(r"([MLHV])([-\d.]+)(?:,([-\d.]+))?", path.get("d", "")):
            if cmd in "ML":
                x, y = float(a), float(b)
            elif cmd == "H":
                x = float(a)
            else:
                y = float(a)
            found.append((x, y))
    found += [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]
    for r in root.iter(f"{SVG}rect"):
        x, y = float(r.get("x")), float(r.get("y"))
        found += [(x, y), (x + float(r.get("width")), y + float(r.get("height")))]
    return found


def test_values_map_inside_the_view_box_and_higher_is_higher() -> None:
    points = [(T0 + timedelta(minutes=i), v) for i, v in enumerate([0.5, 3.0, -2.0, 120.0])]
    root = parsed(line_chart("latency", [Series("p99", points)]))
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    dots = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")]
    assert len(dots) == 4
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in coordinates(root))
    xs, ys = [x for x, _ in dots], [y for _, y in dots]
    assert xs == sorted(xs) and len(set(xs)) == 4  # time goes right
    assert ys[3] < ys[1] < ys[0] < ys[2]  # 120 highest, -2 lowest (SVG y grows down)


def test_thresholds_are_drawn_dashed_with_their_labels_and_widen_the_scale() -> None:
    points = [(T0, 99.5), (T0 + timedelta(minutes=1), 99.7)]
    root = parsed(line_chart("success rate", [Series("rate", points)],
                             [Threshold("min 99", 99.0), Threshold("max 250", 250.0)]))
    lines = root.findall(f".//{SVG}g[@class='threshold']/{SVG}line")
    labels = [t.text for t in root.findall(f".//{SVG}g[@class='threshold']/{SVG}text")]
    assert labels == ["min 99", "max 250"] and all(l.get("stroke-dasharray") for l in lines)
    y99, y250 = (float(l.get("y1")) for l in lines)
    assert 0 <= y250 < y99 <= HEIGHT
    assert "threshold min 99" in root.get("aria-label")


def test_a_step_chart_holds_each_value_until_the_next_and_the_last_until_the_end() -> None:
    points = [(T0, 0.0), (T0 + timedelta(minutes=1), 20.0), (T0 + timedelta(minutes=3), 50.0)]
    root = parsed(line_chart("weight", [Series("weight", points)], step=True,
                             end=T0 + timedelta(minutes=4), y_min=0, y_max=100))
    d = root.find(f".//{SVG}path").get("d")
    assert d.count("H") == 3 and d.count("V") == 3  # two steps, then held to the end
    vertices = coordinates(root)[:7]  # M, then H and V for each of the three steps
    reached_50, held = vertices[4], vertices[6]
    assert held == (WIDTH - RIGHT_PLAIN, reached_50[1])  # 50 held, level, to `end`: the right edge


def test_no_values_render_a_no_data_note_not_an_empty_frame() -> None:
    for chart in (line_chart("weight", []), line_chart("rate", [Series("rate", [(T0, None)])]),
                  bar_chart("deploys", []), bar_chart("deploys", [Bar("w1", None)])):
        root = parsed(chart)
        note = root.find(f"{SVG}text[@class='no-data']")
        assert note is not None and "no data" in note.text
        assert not list(root.iter(f"{SVG}path")) and not list(root.iter(f"{SVG}rect"))


def test_every_label_is_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    line = str(line_chart(evil, [Series(evil, [(T0, 1.0), (T0 + timedelta(seconds=5), 2.0)])],
                          [Threshold(evil, 1.5)]))
    bars = str(bar_chart(evil, [Bar(evil, 3.0), Bar("ok", None)]))
    for markup in (line, bars):
        assert "<script" not in markup and "&lt;script&gt;" in markup
        parsed(markup)  # still well-formed
    empty = str(line_chart(evil, []))
    assert "<script" not in empty and parsed(empty).find(f"{SVG}title").text == evil


def test_charts_are_named_for_screen_readers() -> None:
    root = parsed(bar_chart("Deploys per week", [Bar("03 Mar", 2), Bar("10 Mar", None)]))
    assert root.get("role") == "img" and root.find(f"{SVG}title").text == "Deploys per week"
    assert root.get("aria-label") == "Deploys per week: 03 Mar: 2; 10 Mar: no data"
    assert "style" not in str(bar_chart("x", [Bar("a", 1)]))  # the CSP allows no style attribute


def test_bars_are_as_tall_as_their_values_and_a_missing_one_is_a_dash() -> None:
    root = parsed(bar_chart("deploys", [Bar("a", 1), Bar("b", 4), Bar("c", None), Bar("d", 0)]))
    heights = [float(r.get("height")) for r in root.iter(f"{SVG}rect")]
    assert len(heights) == 3 and heights[1] == 4 * heights[0] and heights[2] == 0
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "none"] == ["–"]
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in coordinates(root))


def test_a_count_axis_has_whole_numbers_only() -> None:
    root = parsed(bar_chart("deploys", [Bar("a", 1), Bar("b", 2)]))
    axis = [t.text for t in root.findall(f"{SVG}g[@class='axis']/{SVG}text")]
    assert axis == ["0", "1", "2"]


def test_ticks_and_numbers_read_well() -> None:
    assert ticks(0, 100) == [0, 25, 50, 75, 100]
    assert ticks(0.5, 3.2) == [0, 1, 2, 3, 4]
    assert ticks(99.5, 100.0)[0] <= 99.5 and ticks(99.5, 100.0)[-1] >= 100
    assert duration_ticks(0, 86400) == [0, 21600, 43200, 64800, 86400]  # every 6 h
    assert duration_ticks(0, 95) == [0, 30, 60, 90, 120]
    assert duration_ticks(0, 40 * 86400)[-1] >= 40 * 86400
    assert [number(v) for v in (0.0123456, 12.5, 99.99, 123456.0)] == ["0.01235", "12.5", "99.99",
                                                                       "123,456"]
