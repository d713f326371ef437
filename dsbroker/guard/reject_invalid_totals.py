"""reject_invalid_totals: totals (GROUP BY ROLLUP) only where secondary suppression can protect them.

A total lets a reader subtract: a withheld cell is its total less its released siblings. The sandbox
therefore withholds further cells (secondary suppression) until no withheld cell is one subtraction
away, and it must see the whole table to do so. So a query with totals may not cut rows (LIMIT) or
hide them (HAVING), must output every key (so a total's rows can be told apart), and is not combined
with the dominance rule or noise, whose cells are not plain sums of their rows. MIN and MAX are refused
with totals too: a total's maximum is the largest of its parts', so one above every released part's
names the value of a withheld one, which secondary suppression (an argument about sums) cannot see.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse
from dsbroker.policy.model import Dominance, Noise
from dsbroker.guard.internal_names import TOTALS_META



def reject_invalid_totals(expression: exp.Select, dataset: str, dominance: Dominance | None,
                          noise: Noise | None) -> exp.Select:
    """Refuse ROLLUP with LIMIT, HAVING, MIN or MAX, a key not output, a repeated key, the dominance rule or noise;
    GROUPING() without ROLLUP, or of anything but its keys."""
    _check_grouping(expression, dataset)
    if not expression.meta.get(TOTALS_META):
        return expression
    if dominance is not None or noise is not None:
        refuse("reject_invalid_totals", "TOTALS_NOT_ALLOWED",
               "this grant's " + ("noise" if noise is not None else "dominance rule")
               + " does not combine with totals (ROLLUP); ask for the cells and add them up", table=dataset)
    extreme = expression.find(exp.Min, exp.Max)
    if extreme is not None:
        name = "MIN" if isinstance(extreme, exp.Min) else "MAX"
        refuse("reject_invalid_totals", "TOTALS_EXTREME_NOT_ALLOWED", f"{name} is not allowed with totals (ROLLUP): "
               "a total's extreme is one of its parts', withheld ones included; ask for it without totals",
               table=dataset, function=name)
    if expression.args.get("having") is not None:
        refuse("reject_invalid_totals", "TOTALS_HAVING_NOT_ALLOWED", "HAVING is not allowed with totals (ROLLUP): "
               "protecting the totals needs every row of the table", table=dataset)
    if expression.args.get("limit") is not None:
        refuse("reject_invalid_totals", "TOTALS_LIMIT_NOT_ALLOWED", "LIMIT is not allowed with totals (ROLLUP): "
               "protecting the totals needs every row of the table", table=dataset)
    keys = expression.args["group"].expressions
    outputs = [projection.unalias() for projection in expression.expressions]
    for key in keys:
        if sum(key == other for other in keys) > 1:
            refuse("reject_invalid_totals", "TOTALS_KEY_REPEATED", "a key is listed twice in ROLLUP", table=dataset)
        if key not in outputs:
            name = key.name if isinstance(key, exp.Column) else key.sql()
            refuse("reject_invalid_totals", "TOTALS_KEY_NOT_OUTPUT",
                   f"every ROLLUP key must be an output column; add {name!r} to SELECT", table=dataset, column=name)
    return expression


def _check_grouping(expression: exp.Select, dataset: str) -> None:
    """GROUPING(keys) says which level a row of totals is: the sandbox computes it from the row's level (the
    answer marks the same keys rolled up), so it may name ROLLUP keys only, and only where there are totals."""
    group = expression.args.get("group")
    keys = group.expressions if group is not None and expression.meta.get(TOTALS_META) else []
    for grouping in expression.find_all(exp.Grouping):
        if not keys:
            refuse("reject_invalid_totals", "CONSTRUCT_NOT_ALLOWED", "GROUPING() reads the level of a row of totals; "
                   "use it with GROUP BY ROLLUP", table=dataset, construct="GROUPING")
        for argument in grouping.expressions or [grouping]:
            if argument not in keys:
                column = argument.find(exp.Column)
                refuse("reject_invalid_totals", "CONSTRUCT_NOT_ALLOWED", "GROUPING() takes the ROLLUP's keys",
                       table=dataset, column=column.name if column is not None else None, construct="GROUPING")
