"""The server's SVG charts: well-formed, bars in proportion, every figure also in words and in a
table, labels escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.web.charts import Point, bar_chart

SVG = "{http://www.w3.org/2000/svg}"


def _figure(**kwargs):
    defaults = dict(label_heading="Day", value_heading="Uptime", describe="Uptime per day.")
    return ET.fromstring(str(bar_chart(**{**defaults, **kwargs})))


def test_bars_are_in_proportion_and_every_value_is_in_the_table():
    points = [Point("1 Dec", 100.0), Point("2 Dec", 50.0), Point("3 Dec", 0.0)]
    figure = _figure(
        chart_id="uptime", title="Uptime", points=points, show=lambda v: f"{v:.0f} %", ceiling=100
    )
    svg = figure.find(f"{SVG}svg")
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "uptime-title uptime-desc"
    assert svg.find(f"{SVG}title").text == "Uptime" and svg.find(f"{SVG}desc").text == "Uptime per day."
    heights = [float(rect.get("height")) for rect in svg.iter(f"{SVG}rect")]
    assert heights[0] > 0 and abs(heights[1] - heights[0] / 2) < 0.2 and heights[2] == 0
    rows = [
        (row.find("th").text, row.find("td").text) for row in figure.iter("tr") if row.find("td") is not None
    ]
    assert rows == [("1 Dec", "100 %"), ("2 Dec", "50 %"), ("3 Dec", "0 %")]
    assert figure.find(".//caption").text == "Uptime"


def test_no_points_all_zero_and_hostile_labels_draw_a_valid_chart():
    empty = _figure(chart_id="e", title="Nothing", points=[])
    assert empty.find(f"{SVG}svg") is not None and not list(empty.iter("tr"))[1:]
    zeros = _figure(chart_id="z", title="Zeros", points=[Point("a", 0), Point("b", 0)])
    assert all(float(rect.get("height")) == 0 for rect in zeros.iter(f"{SVG}rect"))
    hostile = _figure(chart_id="h", title="<script>x</script>", points=[Point("<b>&", 3)])
    assert hostile.find(".//caption").text == "<script>x</script>"  # text, not markup
    assert hostile.find(".//script") is None and hostile.find(".//b") is None


def test_a_long_series_labels_about_a_dozen_bars_but_tables_all():
    points = [Point(f"{hour:02d}h", hour) for hour in range(48)]
    figure = _figure(chart_id="l", title="Per hour", points=points)
    labels = [text.text for text in figure.find(f"{SVG}svg").iter(f"{SVG}text")][2:]
    assert 10 <= len(labels) <= 13 and labels[0] == "00h"
    assert len([row for row in figure.iter("tr") if row.find("td") is not None]) == 48


def test_a_folded_chart_keeps_its_table_under_a_summary():
    folded = _figure(chart_id="f", title="Jobs", points=[Point("10:00", 2)], folded="Jobs <hour> by hour")
    details = folded.find("details")
    assert details.find("summary").text == "Jobs <hour> by hour"  # escaped, read back as text
    assert details.find(".//table").get("id") == "f-table" and folded.find("div") is None
    assert _figure(chart_id="o", title="Jobs", points=[Point("10:00", 2)]).find("details") is None


def _luminance(colour: str) -> float:
    channels = [int(colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_charts_text_and_bars_contrast_with_the_page_as_wcag_aa_asks():
    """axe-core cannot compute the contrast of text inside an SVG (it leaves it for review): the
    charts' colours against the page's paper (app/static/grid.css), by WCAG 2.1's formula."""
    import re
    from pathlib import Path

    from app.web import charts

    css = (Path(charts.__file__).resolve().parent.parent / "static" / "grid.css").read_text()
    paper = re.search(r"--paper:\s*(#[0-9a-fA-F]{6})", css).group(1)
    assert _contrast("#000000", "#ffffff") > 20.9 and _contrast("#767676", "#ffffff") > 4.5  # the formula
    assert _contrast(charts.AXIS, paper) >= 4.5  # its labels: text (1.4.3)
    assert _contrast(charts.BAR, paper) >= 3.0  # its bars: graphical objects (1.4.11)
