"""Charts drawn on the server as SVG: no script, no CDN, nothing fetched at run time.

Each chart is a ``<figure>`` whose SVG is an image with a title and a description that says what
it shows in words (its range, its highest and latest values), followed by the same figures as a
data table: nothing is told by the drawing alone (WCAG 2.1 1.1.1, 1.4.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 220
LEFT = 56  # room for the axis' values
BOTTOM = 40  # room for the labels
TOP = 16
RIGHT = 8
#: Bars and axis: 3:1 against white at least (WCAG 2.1 1.4.11, non-text contrast).
BAR = "#0b4fb3"
AXIS = "#4a4a4a"


@dataclass(frozen=True)
class Point:
    label: str  # shown under the bar and in the table's first column
    value: float | Decimal | int


def _plain(value: float | Decimal | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def bar_chart(
    chart_id: str,
    title: str,
    points: Sequence[Point],
    *,
    label_heading: str,
    value_heading: str,
    describe: str,
    show: Callable[[float | Decimal | int], str] = _plain,
    ceiling: float | None = None,
    every: int | None = None,
    folded: str | None = None,
) -> Markup:
    """One series of bars with its table.

    ``describe``: a sentence saying what the figures show (the caller's, translated); ``show``
    writes a value for people (units, locale); ``ceiling``: the axis' top (100 for percents),
    else the highest value; ``every``: label one bar in this many (default: about twelve labels);
    ``folded``: the table folded under this summary (a ``<details>``), so that a page of several
    charts stays short while its figures are a click or a key away.
    """
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    values = [float(point.value) for point in points]
    top = ceiling if ceiling is not None else max(values, default=0.0)
    top = top if top > 0 else 1.0
    count = max(len(points), 1)
    slot = plot_w / count
    bar_w = max(slot * 0.7, 1.0)
    every = every or max(1, -(-count // 12))
    base, right = TOP + plot_h, WIDTH - RIGHT
    stroke, small = f'stroke="{AXIS}"', f'font-size="12" fill="{AXIS}"'
    axis_top = top if ceiling is not None else max(values, default=0)
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'focusable="false" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(describe)}</desc>',
        # The axis, its top and its zero.
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" {stroke} />',
        f'<line x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" {stroke} />',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{right}" y2="{TOP}" {stroke} stroke-dasharray="4 4" />',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" {small}>{escape(show(axis_top))}</text>',
        f'<text x="{LEFT - 6}" y="{base + 4}" text-anchor="end" {small}>{escape(show(0))}</text>',
    ]
    for index, (point, value) in enumerate(zip(points, values, strict=True)):
        height = max(0.0, min(value / top, 1.0)) * plot_h
        x = LEFT + index * slot + (slot - bar_w) / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{base - height:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
            f'fill="{BAR}">'
            f"<title>{escape(point.label)}: {escape(show(point.value))}</title></rect>"
        )
        if index % every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{base + 16}" text-anchor="middle" {small}>'
                f"{escape(point.label)}</text>"
            )
    parts.append("</svg>")
    rows = "".join(
        f'<tr><th scope="row">{escape(point.label)}</th>'
        f'<td class="number">{escape(show(point.value))}</td></tr>'
        for point in points
    )
    table = (
        f'<div class="table-wrap"><table id="{chart_id}-table"><caption>{escape(title)}</caption>'
        f'<thead><tr><th scope="col">{escape(label_heading)}</th>'
        f'<th scope="col" class="number">{escape(value_heading)}</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )
    if folded is not None:
        table = f"<details><summary>{escape(folded)}</summary>{table}</details>"
    return Markup(
        f'<figure class="chart" id="{chart_id}"><figcaption>{escape(title)}</figcaption>{"".join(parts)}'
        f'<p class="hint">{escape(describe)}</p>{table}</figure>'
    )
