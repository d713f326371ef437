"""add_entity_threshold: release only cells with at least k distinct entities."""

from __future__ import annotations

import sqlglot.expressions as exp

from broker.policy import Noise


def add_entity_threshold(expression: exp.Select, entity: str, min_entities: int, noise: Noise | None) -> exp.Select:
    """AND ``COUNT(DISTINCT entity) >= k`` into HAVING (a global aggregate gets one too).

    Under a noise policy the sandbox applies a noisy threshold instead: an exact one would tell
    whether a cell holds k or k - 1 taxpayers, which noise elsewhere cannot undo.
    """
    if noise is not None:
        return expression
    threshold = exp.GTE(
        this=exp.Count(this=exp.Distinct(expressions=[exp.column(entity)])),
        expression=exp.Literal.number(min_entities),
    )
    having = expression.args.get("having")
    condition = threshold if having is None else exp.and_(threshold, exp.paren(having.this, copy=False), copy=False)
    expression.set("having", exp.Having(this=condition))
    return expression
