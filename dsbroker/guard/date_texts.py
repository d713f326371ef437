"""date_texts: ``strftime`` of a year or a month is the text of a date part the guard already reasons about.

``strftime(period, '%Y')`` takes one value per year of ``period``, and ``strftime(period, '%Y-%m')`` one per
month, each a different text: grouping by it makes the same cells as ``year(period)`` and
``date_trunc('month', period)``. So the engine computes those (the cell query, the threshold, the auditor's
coverage are the accepted query's, byte for byte) and the sandbox writes the text from the released key, as
DuckDB writes it (``year_text``): the engine never runs ``strftime``, whose text and spelling differ between
engines (PostgreSQL's ``to_char``). In WHERE (and a bucket's WHEN), ``= '2025'`` or ``IN ('2025-01', ...)`` is
``year(period) = 2025`` or ``date_trunc('month', period) IN (DATE '2025-01-01', ...)``, exactly, for the texts
of years 1000 to 9999 (every engine writes those in four digits). Refused, having no exact equivalent: any
other format (a day, a week, a weekday cut finer than the grant's date grid is reasoned about), a format that
is not a literal, ``strftime`` of anything but a column, a range on its text (``>= '2025'`` compares text, and
``'10000' < '2025'``), and a text that is no such year or month.
"""

from __future__ import annotations

import re

import sqlglot.expressions as exp

FORMATS = {"%Y": "year", "%Y-%m": "month"}
_YEAR = re.compile(r"[1-9][0-9]{3}")
_MONTH = re.compile(r"([1-9][0-9]{3})-(0[1-9]|1[0-2])")


def strftime_format(node: exp.Expr) -> str | None:
    """``%Y`` or ``%Y-%m`` where ``node`` is ``strftime(<column>, '<that format>')``; None for anything else."""
    if isinstance(node, exp.TimeToStr) and isinstance(node.this, exp.Column):
        written = node.args.get("format")
        if isinstance(written, exp.Literal) and written.is_string and written.name in FORMATS:
            return written.name
    return None


def engine_key(node: exp.Expr) -> exp.Expr:
    """The date part ``node`` (an accepted strftime) makes the same cells as: ``year(x)`` or a month's truncation."""
    column = node.this.copy()
    if FORMATS[strftime_format(node) or ""] == "year":
        return exp.Year(this=column)
    return exp.TimestampTrunc(this=column, unit=exp.Var(this="MONTH"))


def engine_literal(node: exp.Expr, text: exp.Expr) -> exp.Expr | None:
    """What :func:`engine_key` of ``node`` equals where ``node`` equals the literal ``text``: 2025 for '2025',
    DATE '2025-03-01' for '2025-03'; None where ``text`` is no year or month of four-digit years."""
    if not (isinstance(text, exp.Literal) and text.is_string):
        return None
    if FORMATS[strftime_format(node) or ""] == "year":
        return exp.Literal.number(text.name) if _YEAR.fullmatch(text.name) else None
    month = _MONTH.fullmatch(text.name)
    return exp.cast(exp.Literal.string(f"{month[1]}-{month[2]}-01"), exp.DataType.Type.DATE) if month else None


def year_text(year: int) -> str:
    """A year as DuckDB's ``strftime('%Y')`` writes it: four digits at least, zero-padded, a minus before BC."""
    return str(year) if year < 0 else f"{year:04d}"
