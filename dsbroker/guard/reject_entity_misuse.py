"""reject_entity_misuse: the privacy unit appears only as COUNT(DISTINCT entity)."""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse
from dsbroker.policy.model import ColumnLevel


def reject_entity_misuse(expression: exp.Select, dataset: str, columns: dict) -> exp.Select:
    """Refuse the entity column anywhere but directly inside COUNT(DISTINCT ...)."""
    for column in expression.find_all(exp.Column):
        if columns.get(column_key(column)) is not ColumnLevel.ENTITY:
            continue
        distinct = column.parent
        if not (isinstance(distinct, exp.Distinct) and isinstance(distinct.parent, exp.Count)
                and len(distinct.expressions) == 1 and column.arg_key == "expressions"):
            refuse("reject_entity_misuse", "ENTITY_COLUMN_MISUSED",
                   f"column {column.name!r} identifies individual entities; it may appear only as "
                   f"COUNT(DISTINCT {column.name})", table=dataset, column=column.name)
    return expression
