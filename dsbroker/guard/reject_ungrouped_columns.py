"""reject_ungrouped_columns: outside aggregates, only group keys may be output, ordered or tested in HAVING."""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_TYPES, refuse


def reject_ungrouped_columns(expression: exp.Select, dataset: str) -> exp.Select:
    """Refuse a column in SELECT, HAVING or ORDER BY that is neither aggregated nor a group key."""
    group = expression.args.get("group")
    keys = list(group.expressions) if group is not None else []
    having = expression.args.get("having")
    order = expression.args.get("order")
    targets = [p.unalias() for p in expression.expressions]
    targets += [having.this] if having is not None else []
    targets += [o.this for o in order.expressions] if order is not None else []
    for target in targets:
        _check(target, keys, dataset)
    return expression


def _check(node: exp.Expr, keys: list, dataset: str) -> None:
    if isinstance(node, AGGREGATE_TYPES) or node in keys:
        return
    if isinstance(node, exp.Column):
        refuse("reject_ungrouped_columns", "OUTPUT_NOT_AGGREGATED",
               f"column {node.name!r} is neither aggregated nor in GROUP BY; add it to GROUP BY (if it is a "
               "group column) or aggregate it", table=dataset, column=node.name)
    for child in node.iter_expressions():
        _check(child, keys, dataset)
