"""reject_invalid_totals: totals (ROLLUP, CUBE, GROUPING SETS) only where the sandbox can protect them.

A total lets a reader subtract: a withheld cell is its total less its released siblings. The sandbox
therefore withholds further cells (secondary suppression under ROLLUP, the released-cell auditor under
CUBE and GROUPING SETS) until no withheld cell, and no sum of too few taxpayers, can be subtracted out,
and it must see the whole table to do so. So a query with totals may not cut rows (LIMIT) or
hide them (HAVING), must output every key (so a total's rows can be told apart), and is not combined
with the dominance rule or noise, whose cells are not plain sums of their rows. MIN and MAX are refused
with totals too: a total's maximum is the largest of its parts', so one above every released part's
names the value of a withheld one, which secondary suppression (an argument about sums) cannot see.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse
from dsbroker.policy.model import Dominance, Noise
from dsbroker.guard.internal_names import TOTALS_FORM_META, TOTALS_META



def reject_invalid_totals(expression: exp.Select, dataset: str, dominance: Dominance | None,
                          noise: Noise | None) -> exp.Select:
    """Refuse totals with LIMIT, HAVING, MIN or MAX, a key not output, a repeated key, the dominance rule or noise;
    GROUPING() without totals, or of anything but their keys."""
    _check_grouping(expression, dataset)
    if not expression.meta.get(TOTALS_META):
        return expression
    form = expression.meta.get(TOTALS_FORM_META, "ROLLUP")
    if dominance is not None or noise is not None:
        refuse("reject_invalid_totals", "TOTALS_NOT_ALLOWED",
               "this grant's " + ("noise" if noise is not None else "dominance rule")
               + f" does not combine with totals ({form}); ask for the cells and add them up", table=dataset,
               construct=form)
    extreme = expression.find(exp.Min, exp.Max)
    if extreme is not None:
        name = "MIN" if isinstance(extreme, exp.Min) else "MAX"
        refuse("reject_invalid_totals", "TOTALS_EXTREME_NOT_ALLOWED", f"{name} is not allowed with totals ({form}): "
               "a total's extreme is one of its parts', withheld ones included; ask for it without totals",
               table=dataset, function=name, construct=form)
    if expression.args.get("having") is not None:
        refuse("reject_invalid_totals", "TOTALS_HAVING_NOT_ALLOWED", f"HAVING is not allowed with totals ({form}): "
               "protecting the totals needs every row of the table", table=dataset, construct=form)
    if expression.args.get("limit") is not None:
        refuse("reject_invalid_totals", "TOTALS_LIMIT_NOT_ALLOWED", f"LIMIT is not allowed with totals ({form}): "
               "protecting the totals needs every row of the table", table=dataset, construct=form)
    keys = expression.args["group"].expressions
    outputs = [projection.unalias() for projection in expression.expressions]
    for key in keys:
        if sum(key == other for other in keys) > 1:
            refuse("reject_invalid_totals", "TOTALS_KEY_REPEATED", f"a key is listed twice in {form}", table=dataset,
                   construct=form)
        if key not in outputs:
            name = key.name if isinstance(key, exp.Column) else key.sql()
            refuse("reject_invalid_totals", "TOTALS_KEY_NOT_OUTPUT",
                   f"every {form} key must be an output column; add {name!r} to SELECT", table=dataset, column=name,
                   construct=form)
    return expression


def _check_grouping(expression: exp.Select, dataset: str) -> None:
    """GROUPING(keys) says which level a row of totals is: the sandbox computes it from the row's level (the
    answer marks the same keys rolled up), so it may name the totals' keys only, and only where there are totals."""
    group = expression.args.get("group")
    keys = group.expressions if group is not None and expression.meta.get(TOTALS_META) else []
    for grouping in expression.find_all(exp.Grouping):
        if not keys:
            refuse("reject_invalid_totals", "CONSTRUCT_NOT_ALLOWED", "GROUPING() reads the level of a row of totals; "
                   "use it with GROUP BY ROLLUP, CUBE or GROUPING SETS", table=dataset, construct="GROUPING")
        for argument in grouping.expressions or [grouping]:
            if argument not in keys:
                column = argument.find(exp.Column)
                refuse("reject_invalid_totals", "CONSTRUCT_NOT_ALLOWED", "GROUPING() takes the keys of the totals",
                       table=dataset, column=column.name if column is not None else None, construct="GROUPING")
