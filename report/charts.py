"""Line-chart geometry for the inline SVG charts: the template only draws what is here."""

from __future__ import annotations

import math
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
WIDTH, HEIGHT = 540, 280
LEFT, RIGHT, TOP, BOTTOM = 62, 130, 28, 40  # margins: axis labels left, legend right


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(frozen=True)
class Line:
    name: str
    colour: str
    points: tuple[tuple[float, float], ...]  # pixel coordinates; one point is drawn as a dot


@dataclass(frozen=True)
class LineChart:
    title: str
    x_label: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    lines: tuple[Line, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = WIDTH - LEFT - RIGHT
    plot_height: int = HEIGHT - TOP - BOTTOM


def ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    if integer:  # steps are whole numbers: no tick at step 0.5
        raw = max(raw, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _span(values: list[float], pad: float) -> tuple[float, float]:
    """The axis range; a flat series gets some room so it does not sit on the frame."""
    low, high = min(values), max(values)
    if high == low:
        room = abs(low) * pad or 1.0
        return low - room, high + room
    return low, high


def line_chart(
    title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step"
) -> LineChart:
    """A chart of named ``[(x, y), ...]`` series sharing one pair of axes."""
    points = [p for values in series.values() for p in values]
    if not points:
        raise ValueError(f"chart {title!r}: no points")
    x0, x1 = _span([p[0] for p in points], pad=0.0)
    y0, y1 = _span([p[1] for p in points], pad=0.1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * plot_w, 1)

    def sy(y: float) -> float:
        return round(TOP + (1 - (y - y0) / (y1 - y0)) * plot_h, 1)

    return LineChart(
        title=title,
        x_label=x_label,
        x_ticks=tuple(Tick(sx(t), f"{t:g}") for t in ticks(x0, x1, integer=True)),
        y_ticks=tuple(Tick(sy(t), f"{t:.3g}") for t in ticks(y0, y1)),
        lines=tuple(
            Line(name, PALETTE[i % len(PALETTE)], tuple((sx(x), sy(y)) for x, y in values))
            for i, (name, values) in enumerate(series.items())
        ),
    )
