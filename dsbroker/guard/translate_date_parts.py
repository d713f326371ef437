"""translate_date_parts: write quarter() as EXTRACT for engines other than DuckDB.

sqlglot carries ``year`` and ``month`` over to PostgreSQL as EXTRACT, but
writes ``QUARTER(period)``, which PostgreSQL does not have. EXTRACT(QUARTER
FROM ...) means the same on every engine we target.
"""

from __future__ import annotations

import sqlglot.expressions as exp


def translate_date_parts(expression: exp.Select, engine_dialect: str) -> exp.Select:
    """Replace QUARTER(x) by EXTRACT(QUARTER FROM x) unless the engine is DuckDB."""
    if engine_dialect == "duckdb":
        return expression
    for quarter in list(expression.find_all(exp.Quarter)):
        quarter.replace(exp.Extract(this=exp.var("QUARTER"), expression=quarter.this))
    return expression
