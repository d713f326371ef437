"""add_totals: a query that asked for totals gets its ROLLUP back, with what the sandbox needs to protect them.

The earlier rules saw the ROLLUP's keys as a plain GROUP BY (expand_output_aliases). Here the cell
query's GROUP BY becomes ``ROLLUP(keys)`` again, and a ``GROUPING`` column follows (which keys a row
totals over, as SQL's GROUPING() bitmask). With the count of entities every cell carries, it is what
secondary suppression in the sandbox works from. Neither leaves the sandbox.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.guard.internal_names import TOTALS_META


def add_totals(expression: exp.Select) -> exp.Select:
    """Restore ``GROUP BY ROLLUP(keys)`` in the cell query and add the grouping column."""
    if not expression.meta.get(TOTALS_META):
        return expression
    keys = expression.args["group"].expressions
    expression.set("group", exp.Group(expressions=[exp.Rollup(expressions=keys)]))
    grouping = exp.Grouping(expressions=[key.copy() for key in keys]).as_(names.GROUPING, copy=False)
    expression.set("expressions", [*expression.expressions, grouping])
    return expression
