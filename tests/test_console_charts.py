"""The console's server-side SVG charts: data is escaped, nothing needs inline style or script."""

from __future__ import annotations

import re

from bot.console.charts import Point, bar_chart, funnel_chart, line_chart

EVIL = '<script>alert("x")</script>'


def test_labels_and_titles_from_data_are_escaped() -> None:
    for svg in (
        line_chart([Point(EVIL, 50.0, EVIL), Point("b", 70.0)], label=EVIL),
        bar_chart([Point(EVIL, 50.0, EVIL)], label=EVIL),
        funnel_chart([(EVIL, 10, 50.0)], label=EVIL),
    ):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
        assert "style=" not in svg and "on" + "click" not in svg  # the CSP allows neither


def test_a_line_chart_draws_one_dot_per_value_and_skips_notices_without_one() -> None:
    svg = line_chart([Point("11-01", 40.0), Point("11-02", None), Point("11-03", 80.0)], label="确认率")
    assert svg.count("<circle") == 2 and "<polyline" in svg and "80%" in svg


def test_values_outside_0_to_100_are_clipped_and_empty_charts_say_so() -> None:
    svg = bar_chart([Point("a", 250.0), Point("b", -5.0)], label="x")
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([0-9.]+)"', svg)]
    assert max(heights) <= 220 and min(heights) >= 0
    assert "暂无数据" in line_chart([], label="x") and "暂无数据" in bar_chart([], label="x")


def test_the_funnel_shows_each_stage_with_its_count_and_share() -> None:
    svg = funnel_chart([("学生", 40, None), ("已确认（学生）", 30, 75.0)], label="通知")
    assert "学生" in svg and "30 · 75%" in svg and 'class="bar stage-1"' in svg
