"""Tables written for a spreadsheet: CSV as Excel reads it (UTF-8 with a byte-order mark), or XLSX (openpyxl).

Excel opens a CSV without a BOM in the machine's legacy code page (GBK on a Chinese Windows), which
garbles every Chinese character; with the BOM it reads UTF-8. XLSX keeps numbers as numbers (money in
元 with a number format that groups thousands), the header row bold and frozen.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Sequence

from broker.cli.i18n import _
from dsbroker.errors import ConfigError
from dsbroker.private_files import open_private, write_private

FORMATS = ("table", "json", "csv", "xlsx")
BOM = "\ufeff"
MONEY_FORMAT = '#,##0.00" {unit}"'  # the unit's name after the number: 1,234.50 元


@dataclass
class Sheet:
    """A table to write: headings, rows of plain values, and which columns are money (already in ``unit``)."""

    headings: Sequence[str]
    rows: Sequence[Sequence[Any]]
    money: set[int] = field(default_factory=set)
    unit_name: str = "元"
    title: str = "dsbroker"


def csv_text(sheet: Sheet) -> str:
    """``sheet`` as CSV text with a BOM."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(sheet.headings)
    for row in sheet.rows:
        writer.writerow(["" if v is None else v for v in row])
    return BOM + buffer.getvalue()


def write_csv(sheet: Sheet, out: str | None) -> None:
    """``sheet`` as CSV with a BOM, to ``out`` (created 0600) or standard output."""
    text = csv_text(sheet)
    if out:
        write_private(out, text)
    else:
        sys.stdout.write(text)


def write_xlsx(sheet: Sheet, out: str | None) -> None:
    """``sheet`` as an XLSX workbook at ``out`` (a file is required: a workbook is not text)."""
    if not out:
        raise ConfigError(_("--output xlsx writes a file: pass --out FILE.xlsx"))
    with open_private(out, "wb") as handle:
        handle.write(xlsx_bytes(sheet))


def xlsx_bytes(sheet: Sheet) -> bytes:
    """``sheet`` as an XLSX workbook's bytes."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    table = book.active
    table.title = sheet.title[:31]  # Excel's limit on a sheet's name
    table.append(list(sheet.headings))
    for cell in table[1]:
        cell.font = Font(bold=True)
    table.freeze_panes = "A2"
    money_format = MONEY_FORMAT.format(unit=sheet.unit_name)
    for row in sheet.rows:
        table.append([float(v) if isinstance(v, Decimal) else v for v in row])
        if sheet.money:
            for index in sheet.money:
                cell = table.cell(row=table.max_row, column=index + 1)
                if isinstance(cell.value, (int, float)):
                    cell.number_format = money_format
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
