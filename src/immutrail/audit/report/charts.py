"""Bar charts as geometry: the HTML template draws each as inline SVG (no script, no fonts).

Each bar is one ``<rect class="bar">`` with a ``<title>`` giving its exact value, so a chart can
be read by a screen reader and counted by a test; the figures are also in the tables beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 24, 48
_DAY = 86_400.0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    """The exact figure, shown on hover and read by screen readers."""


@dataclass(frozen=True)
class Tick:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    tx: float
    ty: float


@dataclass(frozen=True)
class Label:
    text: str
    x: float
    y: float
    anchor: str
    """SVG text-anchor: start, middle or end."""


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    grid: tuple[Tick, ...]
    """Axis gridlines with their labels."""
    labels: tuple[Label, ...]
    """Category labels (weeks, buckets, vulnerability ids)."""
    marker: Tick | None = None
    """A threshold line (time to patch), if any."""
    horizontal: bool = False


def _r(value: float) -> float:
    return round(value, 2)


_STEPS = 5
"""Gridline intervals: with an axis maximum of 5, 10, 20, 50… every gridline is a whole number."""


def _scale_max(largest: float) -> float:
    """A round axis maximum at or above ``largest`` (5, 10, 20, 50, 100…)."""
    if largest <= _STEPS:
        return float(_STEPS)
    step = 1.0
    while step * 10 <= largest:
        step *= 10
    for factor in (1.0, 2.0, 5.0, 10.0):
        if factor * step >= largest:
            return factor * step
    return 10 * step


def vertical(
    chart_id: str, title: str, description: str, values: Sequence[tuple[str, float]]
) -> Chart:
    """One bar per (label, value), left to right, with a value axis of four gridlines."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    top = _scale_max(max((v for _, v in values), default=0))
    slot = plot_w / max(len(values), 1)
    bars = []
    for number, (label, value) in enumerate(values):
        height = plot_h * value / top
        bars.append(
            Bar(
                _r(_LEFT + number * slot + slot * 0.15),
                _r(_TOP + plot_h - height),
                _r(slot * 0.7),
                _r(height),
                label,
                f"{label}: {value:g}",
            )
        )
    ticks = []
    for step in range(_STEPS + 1):
        y = _TOP + plot_h - plot_h * step / _STEPS
        label = f"{top * step / _STEPS:g}"
        ticks.append(Tick(_LEFT, _r(y), WIDTH - _RIGHT, _r(y), label, _LEFT - 6, _r(y + 4)))
    every = max(1, len(values) // 12)  # keep at most about a dozen category labels legible
    labels = tuple(
        Label(b.label, _r(b.x + b.width / 2), HEIGHT - _BOTTOM + 16, "middle")
        for n, b in enumerate(bars)
        if n % every == 0
    )
    return Chart(chart_id, title, description, WIDTH, HEIGHT, tuple(bars), tuple(ticks), labels)


def exposure(
    chart_id: str,
    title: str,
    description: str,
    rows: Sequence[Mapping[str, Any]],
    threshold_days: int,
) -> Chart:
    """One horizontal bar per vulnerability: its exposure in days; a line at the threshold."""
    row_h = 26
    height = _TOP + _BOTTOM + row_h * max(len(rows), 1)
    left = 200
    plot_w = WIDTH - left - _RIGHT
    days = [float(r["exposed_seconds"]) / _DAY for r in rows]
    top = _scale_max(max([*days, float(threshold_days)]))
    bars = []
    for number, (row, value) in enumerate(zip(rows, days, strict=True)):
        state = "open" if row["open"] else "fixed"
        bars.append(
            Bar(
                left,
                _TOP + number * row_h + 4,
                _r(plot_w * value / top),
                row_h - 8,
                str(row["id"]),
                f"{row['id']}: {value:.2f} days ({state})",
            )
        )
    bottom = height - _BOTTOM
    ticks = []
    for step in range(_STEPS + 1):
        x = _r(left + plot_w * step / _STEPS)
        ticks.append(Tick(x, _TOP, x, bottom, f"{top * step / _STEPS:g} d", x, bottom + 16))
    labels = tuple(Label(b.label, left - 6, _r(b.y + b.height / 2 + 4), "end") for b in bars)
    x = _r(left + plot_w * threshold_days / top)
    marker = Tick(x, _TOP - 4, x, bottom, f"{threshold_days} d threshold", x + 4, _TOP - 6)
    return Chart(
        chart_id,
        title,
        description,
        WIDTH,
        height,
        tuple(bars),
        tuple(ticks),
        labels,
        marker,
        horizontal=True,
    )
