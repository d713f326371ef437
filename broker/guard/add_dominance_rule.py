"""add_dominance_rule: withhold SUM and AVG cells that one or two taxpayers dominate.

A threshold on the number of taxpayers does not protect a cell whose total is mostly one
enterprise's. The rule needs each cell's largest contributions by entity, so the query is
rewritten to aggregate twice, in the same engine query: first per cell and entity (``__cells``),
then per cell, where ``MAX(ABS(contribution), n)`` gives the n largest. A dominated SUM or AVG
cell becomes NULL before HAVING and ORDER BY see it, and one flag column per measure
(``__dominated_<i>``) tells the sandbox how many cells it withheld; the sandbox drops the flags
before anything leaves it. Counts, MIN and MAX are not subject to the rule.
"""

from __future__ import annotations

import sqlglot.expressions as exp

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
    inner = exp.Select(expressions=[key.copy().as_(f"__g{i}") for i, key in enumerate(keys)]
                       + [entity_column.as_("__e"), exp.Count(this=exp.Star()).as_("__rows")])
    inner.set("from_", expression.args["from_"].pop())
    for arg in ("joins", "where"):
        if expression.args.get(arg):
            inner.set(arg, expression.args[arg])
            expression.set(arg, None)
    inner.set("group", exp.Group(expressions=[key.copy() for key in keys] + [entity_column.copy()]))

    for projection in expression.expressions:
        if not isinstance(projection, exp.Alias):  # keep the names the caller would see without the rule
            projection.replace(exp.alias_(projection.copy(), _output_name(projection)))
    sums: dict[str, int] = {}
    extremes: dict[str, int] = {}
    rewrite = _Rewriter(keys, inner, sums, extremes, dominance)
    for node in [*expression.expressions, expression.args.get("having"), expression.args.get("order")]:
        if node is not None:
            rewrite(node)
    expression.set("expressions", expression.expressions + [
        _dominated(index, dominance).as_(f"{FLAG_PREFIX}{index}") for index in sums.values()])
    expression.set("from_", exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(_CELLS)))))
    expression.set("group", exp.Group(expressions=[exp.column(f"__g{i}") for i in range(len(keys))]) if keys else None)
    return expression


class _Rewriter:
    """Top down: a group key becomes its cell column, an aggregate its second-level form."""

    def __init__(self, keys: list, inner: exp.Select, sums: dict, extremes: dict, dominance: Dominance) -> None:
        self.keys, self.inner, self.sums, self.extremes, self.dominance = keys, inner, sums, extremes, dominance

    def __call__(self, node: exp.Expression) -> exp.Expression:
        for index, key in enumerate(self.keys):
            if node == key:
                return exp.column(f"__g{index}")
        if isinstance(node, (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)):
            return _replacement(node, self.inner, self.sums, self.extremes, self.dominance)
        for child in list(node.iter_expressions()):
            replaced = self(child)
            if replaced is not child:
                child.replace(replaced)
        return node


def _replacement(aggregate: exp.Expression, inner: exp.Select, sums: dict, extremes: dict,
                 dominance: Dominance) -> exp.Expression:
    argument = aggregate.this
    if isinstance(aggregate, exp.Count):
        if isinstance(argument, exp.Distinct):
            return exp.Count(this=exp.column("__e"))
        return exp.Sum(this=exp.column("__rows"))
    if isinstance(aggregate, (exp.Sum, exp.Avg)):
        index = _inner_sum(argument, inner, sums)
        total = exp.Sum(this=exp.column(f"__s{index}"))
        value = total if isinstance(aggregate, exp.Sum) else exp.Div(
            this=total, expression=exp.Sum(this=exp.column(f"__n{index}")), typed=False, safe=False)
        return exp.Case(ifs=[exp.If(this=_dominated(index, dominance), true=exp.null())], default=value)
    if isinstance(aggregate, (exp.Min, exp.Max)):
        key = f"{aggregate.key}:{argument.sql()}"
        if key not in extremes:
            extremes[key] = len(extremes)
            inner.expressions.append(type(aggregate)(this=argument.copy()).as_(f"__x{extremes[key]}"))
        return type(aggregate)(this=exp.column(f"__x{extremes[key]}"))
    raise AssertionError(f"no second-level form for {aggregate.key}")  # the guard allows no other aggregate


def _inner_sum(argument: exp.Expression, inner: exp.Select, sums: dict) -> int:
    key = argument.sql()
    if key not in sums:
        index = sums[key] = len(sums)
        inner.expressions.append(exp.Sum(this=argument.copy()).as_(f"__s{index}"))
        inner.expressions.append(exp.Count(this=argument.copy()).as_(f"__n{index}"))
    return sums[key]


def _dominated(index: int, dominance: Dominance) -> exp.Expression:
    """True where the cell's largest contributions to measure ``index`` break the rule."""
    magnitude = exp.Abs(this=exp.column(f"__s{index}"))
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
