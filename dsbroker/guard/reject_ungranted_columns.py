"""reject_ungranted_columns: every column must be one the grant lists at a level other than hidden.

Unknown and hidden columns get the same answer, so a caller cannot probe for
the names of columns it may not see.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.policy.model import ColumnLevel


def reject_ungranted_columns(expression: exp.Select, dataset: str, columns: dict) -> exp.Select:
    """Refuse any column that the grant does not make visible."""
    for column in expression.find_all(exp.Column):
        if columns.get(column_key(column), ColumnLevel.HIDDEN) is ColumnLevel.HIDDEN:
            table = table_of(column, dataset)
            refuse("reject_ungranted_columns", "COLUMN_NOT_GRANTED",
                   f"column {column.name!r} of table {table!r} does not exist or is not granted",
                   table=table, column=column.name)
    return expression
