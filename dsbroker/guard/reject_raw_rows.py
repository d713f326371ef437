"""reject_raw_rows: a query must aggregate (an aggregate function or GROUP BY)."""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_TYPES, refuse


def reject_raw_rows(expression: exp.Select, dataset: str) -> exp.Select:
    """Refuse queries that would return one row per record."""
    if expression.args.get("group") is None and not expression.find(*AGGREGATE_TYPES):
        refuse("reject_raw_rows", "RAW_ROWS",
               "the query returns raw rows; ask for aggregates (COUNT, SUM, AVG) by group columns", table=dataset)
    return expression
