"""add_totals: a query that asked for totals gets its grouping sets back, with what the sandbox needs to protect them.

The earlier rules saw the keys of the ROLLUP, CUBE or GROUPING SETS as a plain GROUP BY
(expand_output_aliases). Here the cell query's GROUP BY asks for the grouping sets again
(:func:`dsbroker.guard.grouping_sets.grouping_clause`), and a ``GROUPING`` column follows (which keys a row
totals over, as SQL's GROUPING() bitmask). With the count of entities every cell carries, it is what
secondary suppression and the released-cell auditor in the sandbox work from. Neither leaves the sandbox.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.guard.grouping_sets import grouping_clause
from dsbroker.guard.internal_names import TOTALS_META


def add_totals(expression: exp.Select) -> exp.Select:
    """Restore the grouping sets in the cell query's GROUP BY and add the grouping column."""
    sets = expression.meta.get(TOTALS_META)
    if not sets:
        return expression
    keys = expression.args["group"].expressions
    expression.set("group", exp.Group(expressions=[grouping_clause(keys, sets)]))
    grouping = exp.Grouping(expressions=[key.copy() for key in keys]).as_(names.GROUPING, copy=False)
    expression.set("expressions", [*expression.expressions, grouping])
    return expression
