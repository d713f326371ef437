"""The console's chart of a released table: one bar a row, scaled to the largest released value, and a withheld
cell drawn as withheld (a hatched slot with its label), never as a bar of zero."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from broker.console.chart import MOST_BARS, Bar, bar_chart, chart_column


def widths(svg: str) -> list[float]:
    return [float(w) for w in re.findall(r'class="bar" x="\d+" y="\d+" width="([\d.]+)"', svg)]


def test_bars_scale_to_the_largest_released_value_and_a_withheld_cell_is_no_bar():
    svg = bar_chart([Bar("a", Decimal(100), "100"), Bar("b", None, ""), Bar("c", 50, "50")], title="vat",
                    withheld_label="不予公开")
    assert widths(svg) == [420.0, 210.0]
    assert svg.count('class="withheld"') == 1 and "不予公开" in svg
    assert 'width="0' not in svg  # nothing is drawn as zero


def test_labels_are_escaped_and_the_chart_stops_at_its_most_bars():
    svg = bar_chart([Bar("<script>", 1, "1")] * (MOST_BARS + 5), title="t", withheld_label="w")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert len(widths(svg)) == MOST_BARS


@pytest.mark.parametrize("columns, rows, withheld, money, expected", [
    (["street", "n", "vat"], [["a", 10, 5], ["b", 12, 7]], set(), {2}, 2),  # the money column first
    (["street", "n", "vat"], [["a", 10, 5], ["b", 12, 7]], set(), set(), 1),  # else the first number past the label
    (["street", "n"], [["a", "x"], ["b", 3]], {(0, 1)}, set(), 1),  # withheld cells do not stop a column
    (["street", "n"], [["a", "x"]], {(0, 1)}, set(), None),  # nothing released: nothing to draw
    (["street", "name"], [["a", "b"]], set(), set(), None),
    (["n"], [[4]], set(), set(), 0),
])
def test_the_chart_draws_the_money_column_or_else_the_first_number(columns, rows, withheld, money, expected):
    assert chart_column(columns, rows, withheld, money) == expected
