"""reject_mistyped_filters: a filter compares a column only with literals of the column's own type.

Comparing a text column with a number makes the engine cast every value of the column to a number, so
``street_code = 5`` fails if and only if some row, in any district, holds a code that is not a number:
an error that depends on data the caller may not see. So a number is compared with numeric columns
only, text with text columns, a date or timestamp with date or timestamp columns (or text in the one
form every engine reads a date in, ``dsbroker.guard.literals``), a boolean with boolean columns; a
date part (year, quarter, month, date_trunc) takes a date or timestamp column. A number's decimals must fit beside
the column's own digits in 38 (``column_types.whole_digits``): DuckDB compares a BIGINT with 0.000...1 of 26
decimals by casting each value to DECIMAL(38, 26), which a 13-digit value fails. A lookup is joined only
on a key of the same type on both sides. The rule needs the engine's column types (``column_types``);
the sandbox always has them, the broker when it has read the owner's catalog. Without them, or for a
column they do not name, it checks nothing there: the sandbox, which knows every served column's type
from its engine, refuses for it.
"""

from __future__ import annotations

import decimal

import sqlglot.expressions as exp

from dsbroker.guard._tree import conjuncts, refuse, row_conditions, table_of
from dsbroker.guard.column_types import MOST_DIGITS, type_class, whole_digits
from dsbroker.guard.literals import read_date, read_timestamp
from dsbroker.guard.reject_invalid_group_keys import DATE_PARTS

_DATES = {"date", "timestamp"}


def reject_mistyped_filters(expression: exp.Select, dataset: str, column_types: dict | None) -> exp.Select:
    """Refuse a filter literal, a date part or a join key whose type does not match its column's."""
    if column_types is None:
        return expression
    _check_filter_literals(expression, dataset, column_types)
    _check_date_parts(expression, dataset, column_types)
    _check_join_keys(expression, dataset, column_types)
    return expression


def _check_filter_literals(expression: exp.Select, dataset: str, column_types: dict) -> None:
    terms = [term for holder in row_conditions(expression) for term in conjuncts(holder.this)]
    for term in terms:  # in WHERE, and in each WHEN of a CASE bucket
        if isinstance(term, exp.In):
            subject, literals = term.this, list(term.expressions)
        elif isinstance(term, exp.Between):
            subject, literals = term.this, [term.args["low"], term.args["high"]]
        elif isinstance(term, (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            subject, literals = (term.left, [term.right]) if _literal_class(term.right) else (term.right, [term.left])
        else:
            continue  # reject_invalid_filters allowed nothing else
        wanted = _subject_class(subject, dataset, column_types)
        if wanted is None:
            continue
        column = subject.this if isinstance(subject, DATE_PARTS) else subject
        for literal in literals:
            if not _compatible(wanted, literal):
                refuse("reject_mistyped_filters", "FILTER_TYPE_MISMATCH",
                       f"{column.name!r} holds {_described(wanted)} and may be compared only with "
                       f"{_described(wanted)}; write the literal as one", table=table_of(column, dataset),
                       column=column.name)
        digits = _whole_digits(subject, dataset, column_types)
        if digits is not None and any(digits + _decimals(literal) > MOST_DIGITS for literal in literals):
            refuse("reject_mistyped_filters", "FILTER_TYPE_MISMATCH",
                   f"{column.name!r} holds numbers of up to {digits} digits, and a literal with more than "
                   f"{max(MOST_DIGITS - digits, 0)} decimals would make the engine cast it to a type some values do "
                   "not fit; write the literal with fewer", table=table_of(column, dataset), column=column.name)


def _check_date_parts(expression: exp.Select, dataset: str, column_types: dict) -> None:
    for node in expression.find_all(*DATE_PARTS, exp.TimeToStr):  # strftime of a year or a month too
        if isinstance(node.this, exp.Column) and _column_class(node.this, dataset, column_types) not in (*_DATES, None):
            refuse("reject_mistyped_filters", "FILTER_TYPE_MISMATCH",
                   f"date parts take a date or timestamp column, and {node.this.name!r} is not one",
                   table=table_of(node.this, dataset), column=node.this.name)


def _check_join_keys(expression: exp.Select, dataset: str, column_types: dict) -> None:
    for join in expression.args.get("joins") or []:
        on = join.args.get("on")
        if isinstance(on, exp.EQ) and isinstance(on.left, exp.Column) and isinstance(on.right, exp.Column):
            left, right = (_column_class(c, dataset, column_types) for c in (on.left, on.right))
            if None not in (left, right) and left != right:
                refuse("reject_mistyped_filters", "JOIN_TYPE_MISMATCH",
                       f"the lookup's key {on.right.name!r} has another type than the dataset's; the owner must "
                       "store both alike", table=table_of(on.right, dataset), column=on.right.name)


def _column_class(column: exp.Expr, dataset: str, column_types: dict) -> str | None:
    engine_type = column_types.get(table_of(column, dataset), {}).get(column.name)
    return type_class(engine_type) if engine_type is not None else None


def _subject_class(subject: exp.Expr, dataset: str, column_types: dict) -> str | None:
    if isinstance(subject, (exp.Year, exp.Quarter, exp.Month)):
        return "number"
    if isinstance(subject, (exp.TimestampTrunc, exp.DateTrunc)):
        return "timestamp"
    return _column_class(subject, dataset, column_types)


def _whole_digits(subject: exp.Expr, dataset: str, column_types: dict) -> int | None:
    """The digits before the point of the exact numeric column ``subject`` is; None for anything else (a date
    part's values have at most a few digits)."""
    if not isinstance(subject, exp.Column):
        return None
    engine_type = column_types.get(table_of(subject, dataset), {}).get(subject.name)
    return whole_digits(engine_type) if engine_type is not None else None


def _decimals(literal: exp.Expr) -> int:
    """The digits after the point of a number literal as written (``5.0`` has one, as the engine reads it)."""
    if isinstance(literal, exp.Neg):
        literal = literal.this
    if not (isinstance(literal, exp.Literal) and not literal.is_string):
        return 0
    exponent = decimal.Decimal(literal.name).as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def _literal_class(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Neg):
        node = node.this
    if isinstance(node, exp.Literal):
        return "text" if node.is_string else "number"
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal):
        return "date" if node.to.this == exp.DataType.Type.DATE else "timestamp"
    if isinstance(node, exp.Boolean):
        return "bool"
    return None


def _compatible(wanted: str, literal: exp.Expr) -> bool:
    given = _literal_class(literal)
    if wanted in _DATES:
        if given in _DATES:
            return True  # a typed literal: reject_unsupported_syntax read it already, strictly
        # Text compared with a date column is cast by the engine: only the one form every engine reads.
        return given == "text" and (read_date if wanted == "date" else read_timestamp)(literal.name) is not None
    if wanted == "other":
        return given == "text"
    return given == wanted


def _described(kind: str) -> str:
    return {"number": "numbers", "text": "text", "date": "dates", "timestamp": "dates and times",
            "bool": "TRUE or FALSE", "other": "text"}[kind]
