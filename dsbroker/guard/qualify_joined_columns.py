"""qualify_joined_columns: with a lookup joined, every dataset column names its table.

The rules before this one see dataset columns unqualified. Once a lookup is
joined, a bare name the two tables share (``district_code`` in both the
declarations and the streets) would be ambiguous to the engine, or worse, bind
to the lookup; the row filter and the threshold must bind to the dataset.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard import internal_names


def qualify_joined_columns(expression: exp.Select) -> exp.Select:
    """Qualify every unqualified column with the dataset's table name when the query joins a lookup."""
    if not expression.args.get("joins"):
        return expression
    table = expression.args["from_"].this.name
    for column in expression.find_all(exp.Column):
        if not column.table and not internal_names.is_internal(column.name):  # the cell table's own columns
            column.set("table", exp.to_identifier(table))
    return expression
