"""add_dominance_rule: give the sandbox each cell's largest contributions, to withhold dominated sums.

A threshold on the number of taxpayers does not protect a cell whose total is mostly one
enterprise's. The rule needs each cell's largest contributions by entity, so the cell query is
rewritten to aggregate twice, in the same engine query: first per cell and entity (``CELLS``), then
per cell, where the statistics are added up again and, for each measure a SUM or AVG reads, the
magnitude of every entity's total, the n largest (``MAX(ABS(contribution), n)``) and, for the p% rule,
the largest and the two largest. The sandbox then tests the rule exactly, per measure column, and
withholds every sum of a dominated measure in that cell: tested per SUM argument instead,
``SUM(vat_paid + revenue) - SUM(revenue)`` would read a dominated VAT total. Counts, MIN and MAX are
not subject to the rule. Contributions count by magnitude, so refunds cannot hide a dominant taxpayer.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard import internal_names as names
from broker.guard._tree import per_cell_and_entity
from broker.guard.split_cells import PLAN_META
from broker.policy import Dominance


def add_dominance_rule(expression: exp.Select, dominance: Dominance | None) -> exp.Select:
    """Rewrite the cell query to aggregate per cell and entity first, and add each measure's largest shares."""
    if dominance is None or PLAN_META not in expression.meta:
        return expression
    plan = expression.meta[PLAN_META]
    projections = {p.alias: p.this for p in expression.expressions}
    keys = list(expression.args["group"].expressions) if expression.args.get("group") else []
    entity = projections[names.statistic(0)].this.expressions[0]  # COUNT(DISTINCT entity)
    inner = per_cell_and_entity(expression, keys, entity.copy())

    def per_entity(column: exp.Expression, kind: str) -> exp.Expression:
        """The per-entity column of ``kind`` for ``column``, added to the inner query on first use."""
        name = {"sum": names.entity_sum, "count": names.entity_count}.get(kind) or \
            (lambda measure: names.entity_extreme(kind, measure))
        alias = name(column.name)
        if alias not in {p.alias for p in inner.expressions}:
            aggregate = {"sum": exp.Sum, "count": exp.Count, "min": exp.Min, "max": exp.Max}[kind]
            inner.expressions.append(aggregate(this=column.copy()).as_(alias))
        return exp.column(alias)

    outer = []
    for index in range(plan.keys):
        outer.append(exp.column(names.cell_key(index)).as_(names.key(index)))
    for index, statistic in enumerate(plan.statistics):
        source = projections[names.statistic(index)]
        if statistic.kind == "entities":
            value = exp.Count(this=exp.column(names.ENTITY))
        elif statistic.kind == "rows":
            value = exp.Sum(this=exp.column(names.ROWS))
        elif statistic.kind in ("sum", "count"):
            value = exp.Sum(this=per_entity(source.this, statistic.kind))
        else:
            value = type(source)(this=per_entity(source.this, statistic.kind))
        outer.append(value.as_(names.statistic(index)))
    measures = {s.measure: projections[names.statistic(i)].this for i, s in enumerate(plan.statistics)
                if s.kind == "sum"}
    for index, measure in enumerate(plan.dominated):
        magnitude = exp.Abs(this=per_entity(measures[measure], "sum"))
        outer.append(exp.Sum(this=magnitude.copy()).as_(names.dominance_total(index)))
        if dominance.n is not None:
            outer.append(_largest(magnitude, dominance.n).as_(names.dominance_top(index)))
        if dominance.p is not None:
            outer.append(exp.Max(this=magnitude.copy()).as_(names.dominance_largest(index)))
            outer.append(_largest(magnitude, 2).as_(names.dominance_top_two(index)))
    expression.set("expressions", outer)
    expression.set("from_", exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(
        this=exp.to_identifier(names.CELLS)))))
    expression.set("group", exp.Group(expressions=[exp.column(names.cell_key(i)) for i in range(len(keys))])
                   if keys else None)
    having = expression.args.get("having")
    if having is not None:  # the threshold, where small cells are dropped: count entities at the second level
        having.set("this", exp.GTE(this=exp.Count(this=exp.column(names.ENTITY)), expression=having.this.expression))
    return expression


def _largest(magnitude: exp.Expression, n: int) -> exp.Expression:
    """The sum of the ``n`` largest values of ``magnitude`` in a cell."""
    return exp.Anonymous(this="LIST_SUM", expressions=[exp.Max(this=magnitude.copy(), count=exp.Literal.number(n))])
