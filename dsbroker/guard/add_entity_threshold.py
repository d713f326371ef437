"""add_entity_threshold: where the grant drops small cells, the engine leaves them out itself.

Every cell table carries its count of distinct entities (statistic 0, ``split_cells``), by which the
sandbox withholds and marks the cells under the threshold. Under ``disclosure.suppressed: drop`` the
cell query also gets ``HAVING COUNT(DISTINCT entity) >= k``, so those cells never leave the engine.
Not with totals: secondary suppression needs to see every cell, and the sandbox drops the rows
afterwards. Not in encrypted mode (the guard marks there), nor under noise, whose threshold is noisy.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.policy.model import Noise
from dsbroker.guard.internal_names import TOTALS_META


def add_entity_threshold(expression: exp.Select, entity: str, min_entities: int, noise: Noise | None,
                         suppression: str) -> exp.Select:
    """Add ``HAVING COUNT(DISTINCT entity) >= k`` to the cell query where small cells are dropped.

    Under a noise policy the sandbox applies a noisy threshold instead: an exact one would tell
    whether a cell holds k or k - 1 taxpayers, which noise elsewhere cannot undo.
    """
    if noise is not None or suppression != "drop" or expression.meta.get(TOTALS_META):
        return expression
    count = exp.Count(this=exp.Distinct(expressions=[exp.column(entity)]))
    expression.set("having", exp.Having(this=exp.GTE(this=count, expression=exp.Literal.number(min_entities))))
    return expression
