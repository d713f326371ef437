"""add_dominance_rule: withhold SUM and AVG cells that one or two taxpayers dominate.

A threshold on the number of taxpayers does not protect a cell whose total is mostly one
enterprise's. The rule needs each cell's largest contributions by entity, so the query is
rewritten to aggregate twice, in the same engine query: first per cell and entity (``__cells``),
then per cell, where ``MAX(ABS(contribution), n)`` gives the n largest. The rule is tested per
measure column, and a SUM or AVG cell is withheld when any measure in its argument is dominated:
tested per argument instead, ``SUM(vat_paid + revenue) - SUM(revenue)`` would read a dominated VAT
total. A withheld cell becomes NULL before HAVING and ORDER BY see it, and one flag column per
measure (``__dominated_<i>``) tells the sandbox how many cells it withheld; the sandbox drops the
flags before anything leaves it. Counts, MIN and MAX are not subject to the rule.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard._tree import per_cell_and_entity
from broker.policy import Dominance

FLAG_PREFIX = "__dominated_"
_CELLS = "__cells"


def add_dominance_rule(expression: exp.Select, entity: str, dominance: Dominance | None) -> exp.Select:
    """Rewrite to aggregate per cell and entity first, and withhold dominated SUM and AVG cells."""
    if dominance is None:
        return expression
    group = expression.args.get("group")
    keys = list(group.expressions) if group is not None else []
    entity_column = next(c for c in expression.find_all(exp.Column)
                         if c.name == entity and isinstance(c.parent, exp.Distinct)).copy()
    inner = per_cell_and_entity(expression, keys, entity_column)

    for projection in expression.expressions:
        if not isinstance(projection, exp.Alias):  # keep the names the caller would see without the rule
            projection.replace(exp.alias_(projection.copy(), _output_name(projection)))
    sums: dict[str, int] = {}
    measures: dict[str, int] = {}
    extremes: dict[str, int] = {}
    rewrite = _Rewriter(keys, inner, sums, measures, extremes, dominance)
    for node in [*expression.expressions, expression.args.get("having"), expression.args.get("order")]:
        if node is not None:
            rewrite(node)
    expression.set("expressions", expression.expressions + [
        _dominated(index, dominance).as_(f"{FLAG_PREFIX}{index}") for index in measures.values()])
    expression.set("from_", exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(_CELLS)))))
    expression.set("group", exp.Group(expressions=[exp.column(f"__g{i}") for i in range(len(keys))]) if keys else None)
    return expression


class _Rewriter:
    """Top down: a group key becomes its cell column, an aggregate its second-level form."""

    def __init__(self, keys: list, inner: exp.Select, sums: dict, measures: dict, extremes: dict,
                 dominance: Dominance) -> None:
        self.keys, self.inner, self.dominance = keys, inner, dominance
        self.sums, self.measures, self.extremes = sums, measures, extremes

    def __call__(self, node: exp.Expression) -> exp.Expression:
        for index, key in enumerate(self.keys):
            if node == key:
                return exp.column(f"__g{index}")
        if isinstance(node, (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)):
            return self.aggregate(node)
        for child in list(node.iter_expressions()):
            replaced = self(child)
            if replaced is not child:
                child.replace(replaced)
        return node

    def aggregate(self, aggregate: exp.Expression) -> exp.Expression:
        argument = aggregate.this
        if isinstance(aggregate, exp.Count):
            if isinstance(argument, exp.Distinct):
                return exp.Count(this=exp.column("__e"))
            return exp.Sum(this=exp.column("__rows"))
        if isinstance(aggregate, (exp.Sum, exp.Avg)):
            index = self.inner_column(self.sums, argument, "__s", with_count=True)
            total = exp.Sum(this=exp.column(f"__s{index}"))
            value = total if isinstance(aggregate, exp.Sum) else exp.Div(
                this=total, expression=exp.Sum(this=exp.column(f"__n{index}")), typed=False, safe=False)
            flags = [_dominated(self.inner_column(self.measures, column, "__m"), self.dominance)
                     for column in _measure_columns(argument)]
            return exp.Case(ifs=[exp.If(this=exp.or_(*flags, copy=False), true=exp.null())], default=value)
        if isinstance(aggregate, (exp.Min, exp.Max)):
            index = self.inner_column(self.extremes, aggregate, "__x")
            return type(aggregate)(this=exp.column(f"__x{index}"))
        raise AssertionError(f"no second-level form for {aggregate.key}")  # the guard allows no other aggregate

    def inner_column(self, known: dict, expression: exp.Expression, prefix: str, *, with_count: bool = False) -> int:
        """The index of the per-entity column ``prefix<index>`` for ``expression``, added on first use:
        its SUM for a measure or a SUM argument (and, for AVG, its COUNT), or the MIN or MAX itself."""
        key = expression.sql()
        if key not in known:
            index = known[key] = len(known)
            aggregated = expression.copy() if isinstance(expression, (exp.Min, exp.Max)) \
                else exp.Sum(this=expression.copy())
            self.inner.expressions.append(aggregated.as_(f"{prefix}{index}"))
            if with_count:
                self.inner.expressions.append(exp.Count(this=expression.copy()).as_(f"__n{index}"))
        return known[key]


def _measure_columns(argument: exp.Expression) -> list[exp.Column]:
    """Each distinct column in an aggregate's argument (all measures: the guard checked), in order."""
    return list({column.sql(): column for column in argument.find_all(exp.Column)}.values())


def _dominated(index: int, dominance: Dominance) -> exp.Expression:
    """True where the cell's largest taxpayer totals of measure ``index`` break the rule."""
    magnitude = exp.Abs(this=exp.column(f"__m{index}"))
    total = exp.Sum(this=magnitude.copy())
    conditions = []
    if dominance.n is not None:
        top_n = exp.Anonymous(this="LIST_SUM", expressions=[exp.Max(this=magnitude.copy(), count=exp.Literal.number(dominance.n))])
        conditions.append(exp.GT(this=top_n, expression=exp.Mul(
            this=exp.Literal.number(dominance.k / 100), expression=total.copy())))
    if dominance.p is not None:
        top_two = exp.Anonymous(this="LIST_SUM", expressions=[exp.Max(this=magnitude.copy(), count=exp.Literal.number(2))])
        conditions.append(exp.LT(this=exp.Sub(this=total.copy(), expression=top_two), expression=exp.Mul(
            this=exp.Literal.number(dominance.p / 100), expression=exp.Max(this=magnitude.copy()))))
    return exp.paren(exp.or_(*conditions, copy=False), copy=False) if len(conditions) > 1 else conditions[0]


def _output_name(projection: exp.Expression) -> str:
    if isinstance(projection, exp.Column):
        return projection.name
    return projection.sql(dialect="duckdb")
