"""reject_unsummable_measures: SUM and AVG only over measures whose engine sum cannot fail.

The engine adds up each measure on its own (``split_cells``). For integers up to 64 bits that sum is
computed in a type wider than any table's total, so it cannot overflow; a wider column type
(HUGEINT, DECIMAL(38)) could outgrow its sum, and the engine would then fail if and only if the
values are large. Such a measure is refused before any data is read; the owner can store it as BIGINT
(in fen) or DECIMAL with at most 18 digits. The rule needs the engine's column types; without them, or
for a column they do not name, it checks nothing there, and the sandbox (which has them all) refuses.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard._tree import column_key, refuse, table_of
from dsbroker.guard.column_types import summable


def reject_unsummable_measures(expression: exp.Select, dataset: str, column_types: dict | None,
                               engine_dialect: str) -> exp.Select:
    """Refuse SUM or AVG over a measure whose type could overflow the engine's sum."""
    if column_types is None:
        return expression
    for aggregate in expression.find_all(exp.Sum, exp.Avg):
        for column in aggregate.find_all(exp.Column):
            table = table_of(column, dataset)
            engine_type = column_types.get(table, {}).get(column.name)
            if engine_type is not None and not summable(engine_type, engine_dialect):
                refuse("reject_unsummable_measures", "MEASURE_TYPE_NOT_SUMMABLE",
                       f"measure {column_key(column)!r} is stored as {engine_type}, whose sum "
                       "could overflow in the engine; the owner can store it as BIGINT or DECIMAL(18, s)",
                       table=table, column=column.name)
    return expression
