"""reject_invalid_group_keys: GROUP BY only group-level columns, a period truncated to year, quarter or month, or a
CASE that buckets one group column (``buckets``)."""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.guard.buckets import bucket_column
from dsbroker.guard.date_texts import strftime_format
from dsbroker.policy.model import ColumnLevel

DATE_PARTS = (exp.TimestampTrunc, exp.DateTrunc, exp.Year, exp.Quarter, exp.Month)


def group_term_column(term: exp.Expr, columns: dict) -> exp.Column | None:
    """The group-level column that ``term`` is, or truncates to a date part (or its text); None otherwise."""
    if isinstance(term, DATE_PARTS) or strftime_format(term) is not None:
        term = term.this
    if isinstance(term, exp.Column) and columns.get(column_key(term)) is ColumnLevel.GROUP:
        return term
    return None


def reject_invalid_group_keys(expression: exp.Select, dataset: str, columns: dict) -> exp.Select:
    """Refuse GROUP BY keys that are not group columns (or date parts of them, or CASE buckets of them)."""
    group = expression.args.get("group")
    for key in group.expressions if group is not None else ():
        if isinstance(key, exp.Case):
            bucket_column(key, dataset, columns)
            continue
        if group_term_column(key, columns) is None:
            column = key.find(exp.Column)
            level = columns[column_key(column)].value if column is not None else None
            named = f"column {column.name!r} ({level})" if column is not None else "an expression"
            refuse("reject_invalid_group_keys", "GROUP_BY_NOT_ALLOWED",
                   f"GROUP BY {named} is not allowed; group by group-level columns, or truncate a period "
                   "to year, quarter or month", table=table_of(column, dataset) if column is not None else dataset,
                   column=column.name if column is not None else None)
    return expression
