"""add_entity_cells: aggregate each cell per entity first, and count the entities that make up each sum.

The threshold counts a cell's entities, but a sum is made only of the entities whose amount is set and
not zero: in a street of twelve taxpayers where one alone declares CIT, ``SUM(cit_paid)`` is that
taxpayer's amount. So the cell query aggregates twice, in one engine query: first per cell and entity
(``CELLS``: each entity's total of each measure), then per cell, where the statistics are added up again
and, for each measure a SUM or AVG reads, the entities whose total is not zero are counted. The sandbox
withholds every sum of a measure that fewer than k entities make up (but some do). Counting entities
once each this way is also how ``COUNT(DISTINCT entity)`` is computed here: a group per entity costs the
engine less than a set of entities per cell. With totals (ROLLUP, CUBE, GROUPING SETS) an entity may sit in
several cells of a total, so there the counts are distinct counts over the per-entity rows.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot.expressions as exp

from dsbroker.guard import internal_names as names
from dsbroker.guard._tree import aliased, internal_column, per_cell_and_entity
from dsbroker.guard.grouping_sets import grouping_clause
from dsbroker.guard.internal_names import CELL_PLAN_META, RELEASED_FIRST_META, TOTALS_META


def add_entity_cells(expression: exp.Select) -> exp.Select:
    """Rewrite the cell query into its per-entity form, with a count of contributors per summed measure."""
    if CELL_PLAN_META not in expression.meta:
        return expression  # under noise add_noise_measures writes its own per-entity query
    plan = expression.meta[CELL_PLAN_META]
    sets: tuple[tuple[int, ...], ...] = expression.meta.get(TOTALS_META) or ()
    totals = bool(sets)
    projections = {p.alias: p.this for p in expression.expressions}
    group = expression.args.get("group")
    # With totals the GROUP BY lists grouping sets (add_totals); the GROUPING column lists the keys, in order.
    keys = list(projections[names.GROUPING].expressions if totals else group.expressions) if group is not None else []
    entity = projections[names.statistic(0)].this.expressions[0]  # COUNT(DISTINCT entity)
    inner = per_cell_and_entity(expression, keys, entity)  # both leave the outer query

    def per_entity(column: exp.Expr, kind: str) -> exp.Expr:
        """The per-entity column of ``kind`` for ``column``, added to the inner query on first use."""
        alias = {"sum": names.entity_sum, "count": names.entity_count}[kind](column.name) if kind in ("sum", "count") \
            else names.entity_extreme(kind, column.name)
        if alias not in {p.alias for p in inner.expressions}:
            aggregate = {"sum": exp.Sum, "count": exp.Count, "min": exp.Min, "max": exp.Max}[kind]
            inner.expressions.append(aliased(aggregate(this=column.copy()), alias))
        return internal_column(alias)

    def counted(condition: exp.Expr | None = None) -> exp.Expr:
        """How many entities (meeting ``condition``) a cell holds: one per-entity row each, except in totals."""
        subject = internal_column(names.ENTITY) if condition is None else exp.Case(
            ifs=[exp.If(this=condition, true=internal_column(names.ENTITY))])
        return exp.Count(this=exp.Distinct(expressions=[subject]) if totals else subject)

    def cell_keys() -> list[exp.Column]:
        return [internal_column(names.cell_key(i)) for i in range(len(keys))]

    outer = [aliased(key, names.key(i)) for i, key in enumerate(cell_keys())]
    for index, statistic in enumerate(plan.statistics):
        value = _cell_statistic(statistic.kind, projections[names.statistic(index)], counted, per_entity)
        outer.append(aliased(value, names.statistic(index)))
    if totals:
        outer.append(aliased(exp.Grouping(expressions=cell_keys()), names.GROUPING))
    measures = {s.measure: projections[names.statistic(i)].this.this for i, s in enumerate(plan.statistics)
                if s.kind == "sum"}
    contributors = []
    for index, measure in enumerate(plan.summed):
        total = per_entity(measures[measure], "sum")
        contributors.append(totals_contributors(total, counted) if totals else
                            counted(exp.NEQ(this=total, expression=exp.Literal.number(0))))
        outer.append(aliased(contributors[-1], names.contributors(index)))
        if totals:  # what may cancel in a sum of several withheld cells (sandbox.disclosure.release._secondary_sums)
            outer.append(aliased(counted(exp.LT(this=total.copy(), expression=exp.Literal.number(0))),
                                 names.negatives(index)))
    expression.set("expressions", outer)
    expression.set("from_", exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(
        this=exp.to_identifier(names.CELLS)))))
    if keys:
        expression.set("group", exp.Group(expressions=[grouping_clause(cell_keys(), sets)] if totals else cell_keys()))
    else:
        expression.set("group", None)
    _count_entities_again(expression, counted)
    _release_first_by_contributors(expression, contributors)
    return expression


def _cell_statistic(kind: str, source: exp.Expr, counted: Callable[[], exp.Expr],
                    per_entity: Callable[[exp.Expr, str], exp.Expr]) -> exp.Expr:
    """A cell's statistic of ``kind`` from the per-entity rows: entities counted, rows and sums added up,
    extremes taken again."""
    if kind == "entities":
        return counted()
    if kind == "rows":
        return exp.Sum(this=internal_column(names.ROWS))
    if kind in ("sum", "count"):
        return exp.Sum(this=per_entity(source.this, kind))
    return type(source)(this=per_entity(source.this, kind))


def _count_entities_again(expression: exp.Select, counted: Callable[[], exp.Expr]) -> None:
    """The threshold and the released-first order count entities again, from the per-entity rows."""
    for clause in ("having", "order"):
        node = expression.args.get(clause)
        for count in list(node.find_all(exp.Count)) if node is not None else ():
            if isinstance(count.this, exp.Distinct):
                count.replace(counted())


def _release_first_by_contributors(expression: exp.Select, contributors: list[exp.Expr]) -> None:
    order = expression.args.get("order")
    first = order.expressions[0] if order is not None and order.expressions else None
    if first is not None and RELEASED_FIRST_META in first.meta and contributors:
        # A group whose sum some but fewer than k entities make up is left out whole too (encryption.py):
        # released first means that rule as well, or such groups would take places under the cap.
        k = exp.Literal.number(first.meta[RELEASED_FIRST_META])
        first.set("this", exp.and_(first.this, *(
            exp.or_(exp.EQ(this=count.copy(), expression=exp.Literal.number(0)),
                    exp.GTE(this=count.copy(), expression=k))
            for count in contributors)))


def totals_contributors(total: exp.Expr, counted: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """A total's count of contributors to a measure, never more than the true one, and 0 only when no
    entity's amount in it is set and not zero.

    Under ROLLUP a total's rows are per (finest cell, entity), so an entity's amount in the total is the
    sum of its amounts in several parts, which SQL does not see here: a payment in January and its refund
    in February are not zero each, but nothing together. An entity whose nonzero parts all have one sign
    does contribute; so the count is of those, 2·|nonzero| − |some positive| − |some negative| (the
    entities in exactly one of the two), and 1 where that is 0 but some part is not zero: under k, the sum
    is withheld, as one its entities may cancel in cannot be released on their count."""
    def some(condition: type[exp.Binary]) -> exp.Expr:
        return counted(condition(this=total.copy(), expression=exp.Literal.number(0)))
    nonzero = some(exp.NEQ)
    one_sign = exp.Sub(this=exp.Sub(this=exp.Mul(this=exp.Literal.number(2), expression=nonzero),
                                    expression=some(exp.GT)), expression=some(exp.LT))
    return exp.Case(ifs=[exp.If(this=exp.and_(exp.EQ(this=one_sign.copy(), expression=exp.Literal.number(0)),
                                              exp.GT(this=nonzero.copy(), expression=exp.Literal.number(0))),
                                true=exp.Literal.number(1))], default=one_sign)
