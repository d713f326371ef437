"""add_entity_threshold: release only cells with at least k distinct entities.

Two ways, by the policy's ``disclosure.suppressed``: "drop" leaves a row under the threshold out
(``HAVING COUNT(DISTINCT entity) >= k``); "mark" keeps the row but every aggregate in it becomes
NULL (before HAVING and ORDER BY see it) and a flag column ``__withheld`` tells the sandbox to mark
its cells as withheld. Totals (ROLLUP) always take the second form: secondary suppression needs to
see every cell, and the sandbox drops the rows afterwards when the policy says drop.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.guard._tree import AGGREGATE_TYPES, TOTALS_META, enclosing_aggregate
from broker.policy import Noise

WITHHELD = "__withheld"


def add_entity_threshold(expression: exp.Select, entity: str, min_entities: int, noise: Noise | None,
                         suppression: str) -> exp.Select:
    """Add the threshold ``COUNT(DISTINCT entity) >= k``: into HAVING, or as a mask on every aggregate.

    Under a noise policy the sandbox applies a noisy threshold instead: an exact one would tell
    whether a cell holds k or k - 1 taxpayers, which noise elsewhere cannot undo.
    """
    if noise is not None:
        return expression
    if suppression == "drop" and not expression.meta.get(TOTALS_META):
        having = expression.args.get("having")
        threshold = _passes(entity, min_entities)
        condition = threshold if having is None else exp.and_(threshold, exp.paren(having.this, copy=False), copy=False)
        expression.set("having", exp.Having(this=condition))
        return expression
    for projection in expression.expressions:
        if not isinstance(projection, exp.Alias) and projection.find(*AGGREGATE_TYPES):
            # The name the caller would see without the mask (a masked COUNT(*) is still "COUNT(*)").
            projection.replace(exp.alias_(projection.copy(), projection.sql(dialect="duckdb")))
    clauses = [*expression.expressions, expression.args.get("having"), expression.args.get("order")]
    for aggregate in [a for clause in clauses if clause is not None for a in clause.find_all(*AGGREGATE_TYPES)
                      if enclosing_aggregate(a) is None]:
        aggregate.replace(exp.Case(ifs=[exp.If(this=_passes(entity, min_entities), true=aggregate.copy())]))
    flag = exp.LT(this=_count(entity), expression=exp.Literal.number(min_entities))
    expression.set("expressions", [*expression.expressions, flag.as_(WITHHELD)])
    return expression


def _count(entity: str) -> exp.Expression:
    return exp.Count(this=exp.Distinct(expressions=[exp.column(entity)]))


def _passes(entity: str, min_entities: int) -> exp.Expression:
    return exp.GTE(this=_count(entity), expression=exp.Literal.number(min_entities))
