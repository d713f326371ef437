"""reject_invalid_aggregates: aggregates the grant allows, over measures of one row.

Inside an aggregate only measure columns, numeric literals and arithmetic may
appear: a condition or another column there would split a cell into pieces
smaller than the threshold protects. MIN and MAX each name one entity's value,
so they are granted per measure column (``min_max``), never for the grant as a whole.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard._tree import AGGREGATE_NAMES, AGGREGATE_TYPES, column_key, enclosing_aggregate, refuse, table_of
from broker.policy import ColumnLevel

_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Paren, exp.Neg)


def reject_invalid_aggregates(expression: exp.Select, dataset: str, columns: dict, aggregates: tuple,
                              min_max: dict) -> exp.Select:
    """Refuse aggregates the grant does not allow, or whose argument is not arithmetic on measures."""
    for clause in ("where", "group"):
        node = expression.args.get(clause)
        found = node.find(*AGGREGATE_TYPES) if node is not None else None
        if found is not None:
            refuse("reject_invalid_aggregates", "AGGREGATE_NOT_ALLOWED",
                   f"{AGGREGATE_NAMES[type(found)]} is not allowed in {clause.upper().replace('GROUP', 'GROUP BY')}")
    for aggregate in expression.find_all(*AGGREGATE_TYPES):
        if enclosing_aggregate(aggregate) is not None:
            refuse("reject_invalid_aggregates", "NESTED_AGGREGATE",
                   f"{AGGREGATE_NAMES[type(aggregate)]} may not be nested in another aggregate")
    for aggregate in expression.find_all(*AGGREGATE_TYPES):
        name = AGGREGATE_NAMES[type(aggregate)]
        argument = aggregate.this
        if isinstance(aggregate, (exp.Min, exp.Max)):
            _check_extreme_granted(aggregate, name, dataset, min_max)
        elif name not in aggregates:
            refuse("reject_invalid_aggregates", "AGGREGATE_NOT_ALLOWED",
                   f"{name} is not allowed by this grant; allowed: {', '.join(aggregates)}",
                   table=dataset, function=name)
        if isinstance(aggregate, exp.Count) and isinstance(argument, exp.Star):
            continue
        if isinstance(argument, exp.Distinct):
            if not (isinstance(aggregate, exp.Count) and len(argument.expressions) == 1
                    and isinstance(argument.expressions[0], exp.Column)
                    and columns.get(column_key(argument.expressions[0])) is ColumnLevel.ENTITY):
                column = argument.find(exp.Column)
                refuse("reject_invalid_aggregates", "DISTINCT_NOT_ALLOWED",
                       "DISTINCT is allowed only as COUNT(DISTINCT <entity column>)", table=dataset,
                       column=column.name if column is not None else None)
            continue
        _check_measure_arithmetic(argument, name, dataset, columns)
        if len(aggregate.expressions) > 0:
            refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED", f"{name} takes one argument")
    return expression


def _check_measure_arithmetic(node: exp.Expression, name: str, dataset: str, columns: dict) -> None:
    for inner in node.walk(prune=lambda n: isinstance(n, exp.Column)):
        if isinstance(inner, exp.Column):
            level = columns.get(column_key(inner))
            if level is not ColumnLevel.MEASURE:
                refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED",
                       f"{name}({inner.name}) is not allowed: {inner.name!r} is a {level.value} column, "
                       "and aggregates take measure columns", table=table_of(inner, dataset), column=inner.name)
        elif isinstance(inner, exp.Literal):
            if inner.is_string:
                refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED",
                       f"{name} may not take text literals", table=dataset)
        elif not isinstance(inner, _ARITHMETIC):
            column = inner.find(exp.Column)
            refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED",
                   f"inside {name} only measure columns, numbers and + - * / are allowed, not "
                   f"{inner.key.upper()}", table=dataset, construct=inner.key.upper(),
                   column=column.name if column is not None else None)


def _check_extreme_granted(aggregate: exp.Expression, name: str, dataset: str, min_max: dict) -> None:
    argument = aggregate.this
    named = [c.name for c in argument.find_all(exp.Column)] if isinstance(argument, exp.Expression) else []
    ungranted = [column for column in named if name not in min_max.get(column, ())] or (None if named else [None])
    if ungranted:
        granted = ", ".join(f"{column} ({'/'.join(extremes)})" for column, extremes in min_max.items()) or "none"
        refuse("reject_invalid_aggregates", "AGGREGATE_NOT_ALLOWED",
               f"{name} is not allowed on {ungranted[0]!r} by this grant; MIN and MAX are granted per measure "
               f"column, here: {granted}" if ungranted[0] else f"{name} takes a granted measure column",
               table=dataset, column=ungranted[0], function=name)
