"""translate_grouping: on Spark, SQL's GROUPING of several keys is GROUPING_ID.

add_totals marks which keys a ROLLUP row totals over with ``GROUPING(k1, ..., kn)``, the bitmask DuckDB and
PostgreSQL compute (k1 the highest bit). Spark's GROUPING takes one key; its GROUPING_ID of the same keys is
the same bitmask, ``(grouping(k1) << (n - 1)) + ... + grouping(kn)``.
"""

from __future__ import annotations

import sqlglot.expressions as exp


def translate_grouping(expression: exp.Select, engine_dialect: str) -> exp.Select:
    """On Spark, write GROUPING of more than one key as GROUPING_ID of the same keys."""
    if engine_dialect != "spark":
        return expression
    for grouping in list(expression.find_all(exp.Grouping)):
        keys = grouping.expressions
        if len(keys) > 1:
            grouping.replace(exp.Anonymous(this="GROUPING_ID", expressions=[key.copy() for key in keys]))
    return expression
