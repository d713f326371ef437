"""add_totals: a query that asked for totals gets its ROLLUP back, with what the sandbox needs to protect them.

The earlier rules saw the ROLLUP's keys as a plain GROUP BY (expand_output_aliases). Here the GROUP BY
becomes ``ROLLUP(keys)`` again, and two flag columns follow the outputs: ``__grouping`` (which keys a
row totals over, as SQL's GROUPING() bitmask) and ``__entities`` (its count of entities, by which
the sandbox picks the cells to withhold besides those under the threshold). Neither leaves the sandbox.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard._tree import TOTALS_META

GROUPING, ENTITIES = "__grouping", "__entities"


def add_totals(expression: exp.Select, entity: str) -> exp.Select:
    """Restore ``GROUP BY ROLLUP(keys)`` and add the ``__grouping`` and ``__entities`` flag columns."""
    if not expression.meta.get(TOTALS_META):
        return expression
    keys = expression.args["group"].expressions
    expression.set("group", exp.Group(expressions=[exp.Rollup(expressions=[key.copy() for key in keys])]))
    expression.set("expressions", [
        *expression.expressions, exp.Grouping(expressions=[key.copy() for key in keys]).as_(GROUPING),
        exp.Count(this=exp.Distinct(expressions=[exp.column(entity)])).as_(ENTITIES)])
    return expression
