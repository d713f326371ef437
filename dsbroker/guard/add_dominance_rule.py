"""add_dominance_rule: give the sandbox each cell's largest contributions, to withhold dominated sums.

A threshold on the number of taxpayers does not protect a cell whose total is mostly one
enterprise's. The rule needs each cell's largest contributions by entity: the cell query aggregates
per cell and entity first (add_entity_cells), and this rule adds, per cell and for each measure a SUM
or AVG reads, the magnitude of every entity's total, the n largest (``MAX(ABS(contribution), n)``) and,
for the p% rule, the largest and the two largest. The sandbox then tests the rule exactly, per measure column, and
withholds every sum of a dominated measure in that cell: tested per SUM argument instead,
``SUM(vat_paid + revenue) - SUM(revenue)`` would read a dominated VAT total. Counts, MIN and MAX are
not subject to the rule. Contributions count by magnitude, so refunds cannot hide a dominant taxpayer.

The n largest are DuckDB's ``MAX(x, n)`` (the largest alone, n = 1, a plain ``MAX`` on every engine, which
DuckDB computes once with the p% rule's own: 15% of the dominance query's time at 10M rows went to the
one-element list); other engines have no such aggregate, so there the cell's
magnitudes are collected largest first and the first n added up (PostgreSQL: ``ARRAY_AGG`` sliced and
unnested; Spark: ``COLLECT_LIST`` sorted, its first n elements added one by one, since Spark's own array
sum, ``AGGREGATE``, needs a start value of the elements' exact type). Each gives the same sum of the same n
values, and NULL where a cell has none.
"""

from __future__ import annotations

import sqlglot
import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.policy.model import Dominance
from dsbroker.guard.internal_names import CELL_PLAN_META


def add_dominance_rule(expression: exp.Select, dominance: Dominance | None, engine_dialect: str) -> exp.Select:
    """Add, per cell, each summed measure's total of magnitudes and its largest shares (add_entity_cells
    made the per-entity totals they are computed from)."""
    if dominance is None or CELL_PLAN_META not in expression.meta:
        return expression
    plan = expression.meta[CELL_PLAN_META]
    columns = list(expression.expressions)
    for index, measure in enumerate(plan.dominated):
        magnitude = exp.Abs(this=exp.column(names.entity_sum(measure)))
        columns.append(exp.Sum(this=magnitude.copy()).as_(names.dominance_total(index), copy=False))
        if dominance.n is not None:
            columns.append(_largest(magnitude, dominance.n, engine_dialect).as_(names.dominance_top(index), copy=False))
        if dominance.p is not None:
            columns.append(exp.Max(this=magnitude.copy()).as_(names.dominance_largest(index), copy=False))
            columns.append(_largest(magnitude, 2, engine_dialect).as_(names.dominance_top_two(index), copy=False))
    expression.set("expressions", columns)
    return expression


def _largest(magnitude: exp.Expr, n: int, engine_dialect: str) -> exp.Expr:
    """The sum of the ``n`` largest values of ``magnitude`` in a cell."""
    if n == 1:  # the largest: a plain MAX, NULL alike where a cell has none, and no list or array to build
        return exp.Max(this=magnitude.copy())
    if engine_dialect == "duckdb":
        return exp.Anonymous(this="LIST_SUM", expressions=[exp.Max(this=magnitude.copy(), count=exp.Literal.number(n))])
    if engine_dialect == "spark":
        return _largest_in_spark(magnitude, n)
    # The aggregate inside the subquery reads only the outer query's columns, so it aggregates the outer
    # query's cell (SQL's rule for outer references), per grouping set under ROLLUP too.
    value = magnitude.sql(dialect="postgres")
    return sqlglot.parse_one(
        f"(SELECT SUM({names.LARGEST_VALUE}) FROM UNNEST((ARRAY_AGG({value} ORDER BY {value} DESC) "
        f"FILTER (WHERE {value} IS NOT NULL))[1:{int(n)}]) AS {names.LARGEST}({names.LARGEST_VALUE}))",
        read="postgres")


def _largest_in_spark(magnitude: exp.Expr, n: int) -> exp.Expr:
    """The first ``n`` of the cell's magnitudes sorted largest first, added up: NULL when the cell has none
    (the first element is missing), and a missing later element adds nothing. COLLECT_LIST skips NULLs, and
    Spark computes the repeated aggregate once."""
    value = magnitude.sql(dialect="spark")
    elements = [f"TRY_ELEMENT_AT(SORT_ARRAY(COLLECT_LIST({value}), FALSE), {i})" for i in range(1, int(n) + 1)]
    return sqlglot.parse_one(" + ".join([elements[0], *(f"COALESCE({e}, 0)" for e in elements[1:])]), read="spark")
