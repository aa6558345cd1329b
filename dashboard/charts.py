"""Charts as inline SVG, drawn on the server by pygal (no JavaScript framework in the browser).

Why pygal: a maintained, pure-Python SVG charting library (one small
dependency), so charts are part of the server-rendered HTML, readable in a
test's DOM (each bar is a ``rect``) and need nothing from the network; its
tooltip script is left out (``js=[]``).

>>> svg = histogram("coffee", [3, 0, 5])
>>> svg.startswith("<svg") and svg.count('class="rect reactive tooltip-trigger"') == 3
True
"""

from __future__ import annotations

from typing import Any

import pygal
from pygal.style import DefaultStyle

_COMMON: dict[str, Any] = {
    "js": [],
    "disable_xml_declaration": True,
    "style": DefaultStyle,
    "height": 220,
    "width": 460,
    "explicit_size": True,
    "margin": 8,
}


def _render(chart: Any) -> str:
    return str(chart.render(is_unicode=True))


def count_vs_forecast(title: str, axis: list[str], points: dict[str, tuple[int, float]]) -> str:
    """A series' window counts and their forecasts over the window ends ``axis`` (gaps where it was not ranked)."""
    chart = pygal.Line(
        title=title,
        x_label_rotation=30,
        show_minor_x_labels=False,
        x_labels_major_count=6,
        legend_at_bottom=True,
        allow_interruptions=True,
        **_COMMON,
    )
    chart.x_labels = [a[5:] for a in axis]  # MM-DD HH:MM
    chart.add("count", [points[a][0] if a in points else None for a in axis])
    chart.add("forecast", [round(points[a][1], 2) if a in points else None for a in axis])
    return _render(chart)


def histogram(group: str, counts: list[int]) -> str:
    """Customers per score bin of one group."""
    bins = len(counts)
    chart = pygal.Bar(
        title=f"{group}: customers by score",
        show_legend=False,
        x_label_rotation=45,
        show_minor_x_labels=False,
        x_labels_major_every=max(1, bins // 5),
        **_COMMON,
    )
    chart.x_labels = [f"{i / bins:.2f}" for i in range(bins)]
    chart.add("customers", counts)
    return _render(chart)


def rate(title: str, points: list[tuple[str, float]]) -> str:
    """A rate per minute (events per second) over time."""
    chart = pygal.Line(
        title=title,
        show_legend=False,
        x_label_rotation=30,
        show_minor_x_labels=False,
        x_labels_major_count=6,
        fill=True,
        **_COMMON,
    )
    chart.x_labels = [m[5:] for m, _ in points]
    chart.add("per second", [round(v, 3) for _, v in points])
    return _render(chart)
