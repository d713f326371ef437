"""reject_invalid_filters: WHERE is an AND of simple tests of group and filter columns against literals.

Allowed: ``=``, ``IN (...)``, ``BETWEEN`` and ranges bounded on both sides. A measure the grant
lists under ``ranges`` may be filtered in a range bounded on both sides by numbers (never ``=`` or
``IN``, which would pick out one amount); ``enforce_range_grid`` then snaps the range to its grid.
Refused: OR (it pads a condition into a tracker; ``expand_or_equalities`` has already made an OR of
equalities on one column its IN), NOT and ``<>`` (complements that single out; ``expand_complements`` has
already made those on a column whose values the grant lists the IN of the other values), tests of measures
or of the entity, and anything that is not a literal on the other side.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, conjuncts, refuse, row_conditions, table_of
from dsbroker.guard.reject_invalid_group_keys import DATE_PARTS
from dsbroker.guard.sql_names import sql_name
from dsbroker.policy.model import ColumnLevel

_FILTERABLE = (ColumnLevel.GROUP, ColumnLevel.FILTER)
_LOWER = (exp.GT, exp.GTE)
_UPPER = (exp.LT, exp.LTE)


def reject_invalid_filters(expression: exp.Select, dataset: str, columns: dict, ranges: dict) -> exp.Select:
    """Refuse WHERE conditions other than literal tests of group and filter columns joined by AND; the same for each
    WHEN of a CASE bucket (whose one column reject_invalid_group_keys checked), never with a measure's range."""
    for holder in row_conditions(expression):
        if isinstance(holder, exp.Where):
            _check_condition(holder.this, "WHERE", dataset, columns, ranges)
        else:
            _check_condition(holder.this, "CASE WHEN", dataset, columns, {})
    return expression


def _check_condition(condition: exp.Expr, clause: str, dataset: str, columns: dict, ranges: dict) -> None:
    bounds: dict[str, set[str]] = {}
    for term in conjuncts(condition):
        if isinstance(term, exp.Or):
            refuse("reject_invalid_filters", "OR_NOT_ALLOWED",
                   f"OR is not allowed in {clause} (it can pad a condition); use IN (...) for alternatives",
                   table=dataset)
        if isinstance(term, (exp.Not, exp.NEQ)):
            _refuse_negation(term, clause, dataset, columns)
        if isinstance(term, exp.In):
            if term.args.get("query") or term.args.get("unnest") or not term.expressions:
                refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED", "IN takes a list of literals", table=dataset)
            column = _filter_column(term.this, dataset, columns, ranges, in_range=False)
            for value in term.expressions:
                _require_literal(value, column, dataset)
        elif isinstance(term, exp.Between):
            column = _filter_column(term.this, dataset, columns, ranges, in_range=True)
            _require_literal(term.args["low"], column, dataset, number=column in ranges)
            _require_literal(term.args["high"], column, dataset, number=column in ranges)
        elif isinstance(term, (exp.EQ, *_LOWER, *_UPPER)):
            _check_comparison(term, dataset, columns, ranges, bounds)
        else:
            refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED",
                   f"{sql_name(term)} is not allowed in {clause}; use =, IN, BETWEEN or a bounded range",
                   table=dataset, construct=sql_name(term))
    for column, sides in bounds.items():
        if sides != {"lower", "upper"}:
            refuse("reject_invalid_filters", "RANGE_NOT_BOUNDED",
                   f"the range on {column!r} must be bounded on both sides; use BETWEEN", table=dataset, column=column)


def _refuse_negation(term: exp.Expr, clause: str, dataset: str, columns: dict) -> None:
    """A complement expand_complements could not write as an IN: say which column's values the grant does not list."""
    subject = term.this.unnest() if isinstance(term, exp.Not) else term
    column = next((node for node in (subject.this, subject.args.get("expression")) if isinstance(node, exp.Column)),
                  None) if isinstance(subject, (exp.NEQ, exp.EQ, exp.In)) else None
    if column is not None and columns.get(column_key(column)) in _FILTERABLE:
        refuse("reject_invalid_filters", "NEGATION_NOT_ALLOWED",
               f"the grant lists no values of {column.name!r}, so NOT, <> and NOT IN on it cannot be answered; name "
               "the values you want with = or IN", table=table_of(column, dataset), column=column.name)
    refuse("reject_invalid_filters", "NEGATION_NOT_ALLOWED",
           f"NOT and <> are allowed in {clause} only on a group or filter column whose values the grant lists; "
           "name the values you want with = or IN", table=dataset, column=column.name if column is not None else None)


def _check_comparison(term: exp.Binary, dataset: str, columns: dict, ranges: dict,
                      bounds: dict[str, set[str]]) -> None:
    """A column = < <= > >= a literal, either way round; each range's side goes into ``bounds``."""
    left, right = term.left, term.right
    lower = isinstance(term, _LOWER)
    if _is_literal(left) and not _is_literal(right):  # 5 < x is x > 5
        left, right, lower = right, left, not lower
    column = _filter_column(left, dataset, columns, ranges, in_range=not isinstance(term, exp.EQ))
    _require_literal(right, column, dataset, number=column in ranges)
    if not isinstance(term, exp.EQ):
        bounds.setdefault(column, set()).add("lower" if lower else "upper")


def _filter_column(term: exp.Expr, dataset: str, columns: dict, ranges: dict, *, in_range: bool) -> str:
    base = term.this if isinstance(term, DATE_PARTS) else term
    if not isinstance(base, exp.Column):
        refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED",
               "WHERE tests a column (or a date part of a group column) against literals", table=dataset)
    level = columns.get(column_key(base))
    table = table_of(base, dataset)
    if level is ColumnLevel.MEASURE and column_key(base) in ranges and base is term:
        if not in_range:
            refuse("reject_invalid_filters", "RANGE_REQUIRED",
                   f"measure {base.name!r} may be filtered only in a range bounded on both sides (BETWEEN, or "
                   f">= and <), which snaps to its grid of {ranges[column_key(base)]}", table=table, column=base.name)
        return column_key(base)
    if isinstance(term, DATE_PARTS) and level is not ColumnLevel.GROUP:
        refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED",
               f"date parts are allowed on group columns only, not {base.name!r}", table=table, column=base.name)
    if level not in _FILTERABLE:
        refuse("reject_invalid_filters", "FILTER_COLUMN_NOT_ALLOWED",
               f"column {base.name!r} is a {columns[column_key(base)].value} column and may not be filtered on; "
               "filter on group or filter columns", table=table, column=base.name)
    return column_key(base)


def _is_literal(node: exp.Expr) -> bool:
    if isinstance(node, exp.Neg):
        node = node.this
        return isinstance(node, exp.Literal) and not node.is_string
    if isinstance(node, exp.Cast):
        node = node.this
    return isinstance(node, exp.Literal)


def _require_literal(node: exp.Expr, column: str, dataset: str, *, number: bool = False) -> None:
    if not _is_literal(node):
        refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED",
               f"{column!r} may be compared with literals only", table=dataset, column=column)
    if number and not (isinstance(node, exp.Neg) or (isinstance(node, exp.Literal) and not node.is_string)):
        refuse("reject_invalid_filters", "FILTER_NOT_ALLOWED",
               f"measure {column!r} may be compared with plain numbers only", table=dataset, column=column)
