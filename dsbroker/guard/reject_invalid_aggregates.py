"""reject_invalid_aggregates: aggregates the grant allows, over linear forms of measures.

SUM takes a linear form of measure columns (``dsbroker.guard.linear_forms``): a condition, a product of
columns or a division by one inside an aggregate would turn it into a test of single rows. AVG, MIN
and MAX take one measure, optionally scaled by a number (MIN and MAX by a positive one, or MAX would
give the minimum). MIN and MAX each name one entity's value, so they are granted per measure column
(``min_max``), never for the grant as a whole. COUNT counts rows (``*``), the rows where a measure is
set, or distinct entities. A number added inside an aggregate is refused: it would be added once per
row; write it outside (``SUM(a) + 5 * COUNT(*)``).
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import AGGREGATE_NAMES, AGGREGATE_TYPES, column_key, enclosing_aggregate, refuse, table_of
from dsbroker.guard.linear_forms import linear_form
from dsbroker.policy.model import ColumnLevel
from dsbroker.guard.internal_names import LINEAR_FORM_META


def reject_invalid_aggregates(expression: exp.Select, dataset: str, columns: dict, aggregates: tuple,
                              min_max: dict) -> exp.Select:
    """Refuse aggregates the grant does not allow, or whose argument is not a linear form of measures."""
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
        if len(aggregate.expressions) > 0 or argument is None:
            refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED", f"{name} takes one argument",
                   table=dataset, function=name)
        if isinstance(aggregate, (exp.Min, exp.Max)):
            _check_extreme_granted(aggregate, name, dataset, min_max)
        elif name not in aggregates:
            refuse("reject_invalid_aggregates", "AGGREGATE_NOT_ALLOWED",
                   f"{name} is not allowed by this grant; allowed: {', '.join(aggregates)}",
                   table=dataset, function=name)
        if isinstance(argument, exp.Distinct):
            _check_distinct(aggregate, argument, dataset, columns)
        elif isinstance(aggregate, exp.Count):
            _check_count(argument, dataset, columns)
        else:
            _check_linear_argument(aggregate, name, dataset, columns)
    return expression


def _check_distinct(aggregate: exp.Expr, argument: exp.Distinct, dataset: str, columns: dict) -> None:
    """DISTINCT only as COUNT(DISTINCT <entity column>)."""
    if not (isinstance(aggregate, exp.Count) and len(argument.expressions) == 1
            and isinstance(argument.expressions[0], exp.Column)
            and columns.get(column_key(argument.expressions[0])) is ColumnLevel.ENTITY):
        column = argument.find(exp.Column)
        refuse("reject_invalid_aggregates", "DISTINCT_NOT_ALLOWED",
               "DISTINCT is allowed only as COUNT(DISTINCT <entity column>)", table=dataset,
               column=column.name if column is not None else None)


def _check_linear_argument(aggregate: exp.Expr, name: str, dataset: str, columns: dict) -> None:
    """A SUM, AVG, MIN or MAX argument: a linear form (kept in the aggregate's meta) with no number added,
    a measure in it, one measure except in SUM, and MIN and MAX not scaled by a negative number."""
    form = aggregate.meta[LINEAR_FORM_META] = linear_form(aggregate.this, aggregate=name, columns=columns,
                                                          dataset=dataset)
    if form.constant:
        refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_LINEAR",
               f"a number added inside {name} is added once per row; add it outside the aggregate "
               f"(e.g. {name}(a) + 5 * COUNT(*))", table=dataset, function=name)
    if form.is_constant:
        refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED",
               f"{name} takes a measure column, not only numbers", table=dataset, function=name)
    if not isinstance(aggregate, exp.Sum) and len(form.terms) > 1:
        refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_LINEAR",
               f"{name} takes one measure (times a number); combine measures in SUM, or combine the "
               f"results: {name}(a) + {name}(b)", table=dataset, function=name)
    if isinstance(aggregate, (exp.Min, exp.Max)) and next(iter(form.terms.values())) < 0:
        refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_LINEAR",
               f"{name} of a measure times a negative number is the other extreme; scale the result instead",
               table=dataset, function=name, column=next(iter(form.terms)).split(".")[-1])


def _check_count(argument: exp.Expr, dataset: str, columns: dict) -> None:
    """COUNT(*), or COUNT(measure): the rows where it is set. Anything else tests a condition per row."""
    if isinstance(argument, exp.Star):
        return
    if isinstance(argument, exp.Column) and columns.get(column_key(argument)) is ColumnLevel.MEASURE:
        return
    column = argument.find(exp.Column) if isinstance(argument, exp.Expression) else None
    refuse("reject_invalid_aggregates", "AGGREGATE_ARGUMENT_NOT_ALLOWED",
           "COUNT takes *, a measure column, or DISTINCT <entity column>",
           table=table_of(column, dataset) if column is not None else dataset,
           column=column.name if column is not None else None, function="COUNT")


def _check_extreme_granted(aggregate: exp.Expr, name: str, dataset: str, min_max: dict) -> None:
    argument = aggregate.this
    named = [c.name for c in argument.find_all(exp.Column)] if isinstance(argument, exp.Expression) else []
    ungranted: list[str | None] = [column for column in named if name not in min_max.get(column, ())]
    if not named:
        ungranted = [None]  # it names no column at all
    if ungranted:
        granted = ", ".join(f"{column} ({'/'.join(extremes)})" for column, extremes in min_max.items()) or "none"
        refuse("reject_invalid_aggregates", "AGGREGATE_NOT_ALLOWED",
               f"{name} is not allowed on {ungranted[0]!r} by this grant; MIN and MAX are granted per measure "
               f"column, here: {granted}" if ungranted[0] else f"{name} takes a granted measure column",
               table=dataset, column=ungranted[0], function=name)
