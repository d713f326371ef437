"""expand_date_forms: EXTRACT and date_part of a year, quarter or month are year(), quarter() and month(); a
literal date plus or minus a literal interval in WHERE is the date it comes to.

``EXTRACT(YEAR FROM period)``, ``date_part('year', period)`` and ``year(period)`` are the same function on every
engine the guard writes for, so the first two become the third, which every later rule knows. Other parts
(day, week, day of week, epoch) are left as written and refused as before: they cut finer than the grant's
date grid is reasoned about.

``DATE '2025-07-01' - INTERVAL 6 MONTH`` is a constant: the date the engine would compute, written as a date
literal, selects the same rows (comparing a DATE column, or a TIMESTAMP one, with DATE '2025-01-01' or with
TIMESTAMP '2025-01-01 00:00:00' is the same comparison), so the range checks and the grid see a literal as
they do today. Only whole days, weeks, months, quarters and years of at most four digits are folded, months
as DuckDB and PostgreSQL add them (the 31st plus a month is the last day of the next month); anything else
(hours, CURRENT_DATE, a column plus an interval) is left as written and refused (``INTERVAL is not allowed``).
Only in WHERE: in an output the engine's result would be a TIMESTAMP, which the caller asked for.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

import sqlglot.expressions as exp

from dsbroker.guard._tree import conjuncts, row_conditions
from dsbroker.guard.date_texts import engine_key, engine_literal, strftime_format
from dsbroker.guard.literals import read_date

_PARTS = {"YEAR": exp.Year, "QUARTER": exp.Quarter, "MONTH": exp.Month}
_DATE_PART_FUNCTIONS = {"DATE_PART", "DATEPART"}
_COUNT = re.compile(r"[0-9]{1,4}")
_MONTHS_IN = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}
_DAYS_IN = {"DAY": 1, "WEEK": 7}


def expand_date_forms(expression: exp.Select) -> exp.Select:
    """Write EXTRACT of a year, quarter or month as year() and the like; fold literal date arithmetic in WHERE.

    EXTRACT and date_part of YEAR, QUARTER or MONTH become year(), quarter(), month() everywhere; a literal date
    plus or minus a literal interval in WHERE becomes the date literal it comes to."""
    for node in list(expression.find_all(exp.Extract, exp.Anonymous)):
        part = _part_of(node)
        if part is not None:
            node.replace(_PARTS[part](this=_argument(node).copy()))
    for holder in row_conditions(expression):  # WHERE, and each WHEN of a CASE bucket
        for term in list(conjuncts(holder.this)):
            _expand_strftime(term)
        # Innermost first, so that DATE 'd' + INTERVAL 2 MONTH - INTERVAL 28 DAY folds in two steps.
        for node in reversed(list(holder.this.find_all(exp.Add, exp.Sub))):
            folded = _folded(node)
            if folded is not None:
                node.replace(exp.cast(exp.Literal.string(folded.isoformat()), exp.DataType.Type.DATE))
    return expression


def _expand_strftime(term: exp.Expr) -> None:
    """``strftime(x, '%Y') = '2025'`` is ``year(x) = 2025``, and an IN of such texts the IN of the parts
    (``date_texts``); left as written (and refused) where a text is no year or month of four digits."""
    if isinstance(term, exp.EQ):
        subject, texts = (term.left, [term.right]) if strftime_format(term.left) else (term.right, [term.left])
    elif isinstance(term, exp.In) and not term.args.get("query") and not term.args.get("unnest"):
        subject, texts = term.this, list(term.expressions)
    else:
        return
    if strftime_format(subject) is None:
        return
    literals = [engine_literal(subject, text) for text in texts]
    if texts and all(literal is not None for literal in literals):
        part = engine_key(subject)
        term.replace(exp.EQ(this=part, expression=literals[0]) if isinstance(term, exp.EQ)
                     else exp.In(this=part, expressions=literals))


def _part_of(node: exp.Expr) -> str | None:
    """YEAR, QUARTER or MONTH where ``node`` is EXTRACT(part FROM x) or date_part('part', x); None otherwise."""
    if isinstance(node, exp.Extract):
        unit = node.this
        name = unit.name.upper() if isinstance(unit, (exp.Var, exp.Identifier, exp.Column)) else ""
        return name if name in _PARTS and node.expression is not None else None
    if node.name.upper() in _DATE_PART_FUNCTIONS and len(node.expressions) == 2:
        unit = node.expressions[0]
        if isinstance(unit, exp.Literal) and unit.is_string and unit.name.upper() in _PARTS:
            return unit.name.upper()
    return None


def _argument(node: exp.Expr) -> exp.Expr:
    argument: exp.Expr = node.expression if isinstance(node, exp.Extract) else node.expressions[1]
    return argument


def _folded(node: exp.Add | exp.Sub) -> dt.date | None:
    """The date ``node`` comes to where it is DATE 'literal' plus or minus INTERVAL 'n' UNIT (either order for
    plus); None where it is anything else or comes to a date outside years 1 to 9999."""
    left, right = node.left, node.right
    if isinstance(node, exp.Add) and isinstance(left, exp.Interval):
        left, right = right, left
    day = _literal_date(left)
    if day is None or not isinstance(right, exp.Interval):
        return None
    count, unit = right.this, right.args.get("unit")
    if not (isinstance(count, exp.Literal) and _COUNT.fullmatch(count.this) and isinstance(unit, exp.Var)):
        return None
    amount = int(count.this) * (-1 if isinstance(node, exp.Sub) else 1)
    name = unit.name.upper().removesuffix("S")
    try:
        if name in _DAYS_IN:
            return day + dt.timedelta(days=amount * _DAYS_IN[name])
        if name in _MONTHS_IN:
            return _plus_months(day, amount * _MONTHS_IN[name])
    except (OverflowError, ValueError):
        return None
    return None


def _literal_date(node: exp.Expr) -> dt.date | None:
    """The date of ``DATE 'YYYY-MM-DD'`` (a cast of a string literal to DATE); None otherwise."""
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DATE and isinstance(node.this, exp.Literal) \
            and node.this.is_string:
        return read_date(node.this.this)
    return None


def _plus_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus ``months``, the day clamped to the month's last (as DuckDB and PostgreSQL add months)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise ValueError("outside the years a date literal may have")
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))
