"""A bar chart of a released table as inline SVG, drawn here (no script, no library): one bar per row.

A withheld cell is drawn as a hatched, empty slot labelled as withheld, never as a bar of zero, so that
nobody reads "suppressed" as "nothing".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

from broker.cli.output import is_number

BAR_HEIGHT = 22
GAP = 6
LABEL_WIDTH = 220
BAR_SPACE = 420
VALUE_WIDTH = 160
MOST_BARS = 60  # past this a chart is unreadable; the table below it has every row


@dataclass(frozen=True)
class Bar:
    """One row of the chart: its label and its value (None: withheld)."""

    label: str
    value: Decimal | float | int | None
    shown: str  # the value as the table shows it


def chart_column(columns: list[str], rows: list[list], withheld: set, money: set[int]) -> int | None:
    """The column a chart draws: the first money column, else the first after the first (the row's label) whose
    released cells are all numbers; None when there is none."""
    numeric = [c for c in range(1 if len(columns) > 1 else 0, len(columns))
               if any((r, c) not in withheld for r in range(len(rows)))
               and all(is_number(row[c]) for r, row in enumerate(rows) if (r, c) not in withheld)]
    return next((c for c in numeric if c in money), numeric[0] if numeric else None)


def bar_chart(bars: list[Bar], *, title: str, withheld_label: str) -> Markup:
    """The SVG of ``bars`` (the first :data:`MOST_BARS`), scaled to the largest released value."""
    bars = bars[:MOST_BARS]
    largest = max((abs(float(b.value)) for b in bars if b.value is not None), default=0.0) or 1.0
    height = len(bars) * (BAR_HEIGHT + GAP) + 30
    width = LABEL_WIDTH + BAR_SPACE + VALUE_WIDTH
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
             '<defs><pattern id="withheld" width="8" height="8" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="8" height="8" fill="#f4f4f4"/>'
             '<line x1="0" y1="0" x2="0" y2="8" stroke="#b0b0b0" stroke-width="3"/></pattern></defs>']
    for index, bar in enumerate(bars):
        y = 20 + index * (BAR_HEIGHT + GAP)
        middle = y + BAR_HEIGHT * 0.7
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{middle:.1f}" text-anchor="end">{escape(bar.label)}</text>')
        if bar.value is None:
            parts.append(f'<rect class="withheld" x="{LABEL_WIDTH}" y="{y}" width="{BAR_SPACE}" height="{BAR_HEIGHT}" '
                         f'fill="url(#withheld)" stroke="#999" stroke-dasharray="4 3"/>'
                         f'<text x="{LABEL_WIDTH + 8}" y="{middle:.1f}" class="withheld-label">'
                         f'{escape(withheld_label)}</text>')
            continue
        length = max(1.0, BAR_SPACE * abs(float(bar.value)) / largest)
        parts.append(f'<rect class="bar" x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                     f'fill="#2f6db5"/><text x="{LABEL_WIDTH + length + 6:.1f}" y="{middle:.1f}">'
                     f'{escape(bar.shown)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
