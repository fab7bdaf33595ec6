"""Charts as server-side SVG: no script, no library, readable on a phone and in print.

Each function returns markup for an inline ``<svg>`` that scales to its container (``viewBox``).
Colours and fonts come from classes styled in ``console.css`` (the Content-Security-Policy allows no
inline styles). Every text that came from data is escaped; each point and bar has a ``<title>``
with its exact value, and the chart a ``<desc>`` summarising it for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True, slots=True)
class Point:
    label: str  # under the x axis (a date, a class)
    value: float | None  # a percentage 0–100; None: nothing to show (no confirmation asked)
    title: str = ""  # the tooltip: what the point is


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _label(x: float, y: float, text: str, *, css: str = "lbl") -> str:
    return f'<text class="{css}" x="{_num(x)}" y="{_num(y)}" text-anchor="middle">{escape(text)}</text>'


def _svg(width: int, height: int, label: str, body: list[str], css: str) -> Markup:
    head = (
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        f"<desc>{escape(label)}</desc>"
    )
    return Markup(head + "".join(body) + "</svg>")


def line_chart(points: Sequence[Point], *, label: str, width: int = 560, height: int = 220) -> Markup:
    """Percentages over time: a line through the points that have a value, gridlines at 0/50/100 %."""
    left, right, top, bottom = 40, 12, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []
    for v in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - v / 100)
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_num(y)}" y2="{_num(y)}"/>')
        body.append(f'<text class="lbl" x="{left - 6}" y="{_num(y + 4)}" text-anchor="end">{v}%</text>')
    n = len(points)
    if n == 0:
        body.append(f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">暂无数据</text>')
        return _svg(width, height, label, body, "line-chart")
    step = plot_w / max(1, n - 1) if n > 1 else 0
    coords: list[tuple[float, float, Point]] = []
    every = max(1, -(-n // 8))  # at most ~8 labels under the axis
    for i, p in enumerate(points):
        x = left + (i * step if n > 1 else plot_w / 2)
        if i % every == 0 or i == n - 1:
            body.append(_label(x, height - 12, p.label))
        if p.value is not None:
            y = top + plot_h * (1 - max(0.0, min(100.0, p.value)) / 100)
            coords.append((x, y, p))
    if len(coords) > 1:
        path = " ".join(f"{_num(x)},{_num(y)}" for x, y, _ in coords)
        body.append(f'<polyline class="line" points="{path}"/>')
    for x, y, p in coords:
        tip = escape(f"{p.title or p.label}: {_num(p.value or 0)}%")
        body.append(f'<circle class="dot" cx="{_num(x)}" cy="{_num(y)}" r="4"><title>{tip}</title></circle>')
    return _svg(width, height, label, body, "line-chart")


def bar_chart(points: Sequence[Point], *, label: str, width: int = 560, height: int = 220) -> Markup:
    """Percentages side by side (classes, topics): one bar each, its value above it."""
    left, right, top, bottom = 40, 12, 18, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    body: list[str] = []
    for v in (0, 50, 100):
        y = top + plot_h * (1 - v / 100)
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_num(y)}" y2="{_num(y)}"/>')
        body.append(f'<text class="lbl" x="{left - 6}" y="{_num(y + 4)}" text-anchor="end">{v}%</text>')
    n = len(points)
    if n == 0:
        body.append(f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">暂无数据</text>')
        return _svg(width, height, label, body, "bar-chart")
    slot = plot_w / n
    bar = max(2.0, min(48.0, slot * 0.7))
    every = max(1, -(-n // 12))
    for i, p in enumerate(points):
        cx = left + slot * (i + 0.5)
        if i % every == 0:
            body.append(_label(cx, height - 22, p.label))
        if p.value is None:
            continue
        share = max(0.0, min(100.0, p.value))
        h = plot_h * share / 100
        tip = escape(f"{p.title or p.label}: {_num(share)}%")
        body.append(
            f'<rect class="bar" x="{_num(cx - bar / 2)}" y="{_num(top + plot_h - h)}" width="{_num(bar)}" '
            f'height="{_num(max(h, 0.5))}"><title>{tip}</title></rect>'
        )
        if n <= 16:
            body.append(_label(cx, top + plot_h - h - 4, f"{_num(share)}%", css="val"))
    return _svg(width, height, label, body, "bar-chart")


def funnel_chart(stages: Sequence[tuple[str, int, float | None]], *, label: str, width: int = 520) -> Markup:
    """A notice's funnel: one horizontal bar per stage (label, count, % of its base), widest first."""
    row, left, right = 32, 118, 104
    height = row * len(stages) + 8
    body: list[str] = []
    top = max((count for _, count, _ in stages), default=0) or 1
    for i, (name, count, share) in enumerate(stages):
        y = 4 + i * row
        w = (width - left - right) * count / top
        tip = escape(f"{name}: {count}" + (f"（{share:.0f}%）" if share is not None else ""))
        body.append(f'<text class="lbl" x="{left - 8}" y="{y + 19}" text-anchor="end">{escape(name)}</text>')
        body.append(
            f'<rect class="bar stage-{i}" x="{left}" y="{y + 4}" width="{_num(max(w, 1))}" height="{row - 8}">'
            f"<title>{tip}</title></rect>"
        )
        shown = f"{count}" + (f" · {share:.0f}%" if share is not None else "")
        body.append(f'<text class="val" x="{_num(left + max(w, 1) + 6)}" y="{y + 19}">{escape(shown)}</text>')
    return _svg(width, height, label, body, "funnel-chart")
