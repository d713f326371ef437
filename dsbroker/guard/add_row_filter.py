"""add_row_filter: AND the grant's row filter, bound to the caller, into WHERE."""

from __future__ import annotations

import sqlglot.expressions as exp


def add_row_filter(expression: exp.Select, row_filter: exp.Expr | None) -> exp.Select:
    """Restrict the query to the rows the grant gives this caller (e.g. its own district)."""
    if row_filter is None:
        return expression
    where = expression.args.get("where")
    condition = row_filter.copy() if where is None else exp.and_(row_filter.copy(), exp.paren(where.this, copy=False),
                                                                 copy=False)
    expression.set("where", exp.Where(this=condition))
    return expression
