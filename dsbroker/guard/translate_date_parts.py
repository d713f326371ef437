"""translate_date_parts: write quarter() as EXTRACT, and truncate dates as timestamps, for engines other
than DuckDB.

sqlglot carries ``year`` and ``month`` over to PostgreSQL as EXTRACT, but
writes ``QUARTER(period)``, which PostgreSQL does not have. EXTRACT(QUARTER
FROM ...) means the same on every engine we target.

DuckDB truncates a date to a TIMESTAMP (no time zone). PostgreSQL has no
``date_trunc`` of a date and casts it to ``timestamp with time zone``, so the
key would come back in the session's time zone; truncating it cast to
``timestamp`` gives DuckDB's key.
"""

from __future__ import annotations

import sqlglot.expressions as exp


def translate_date_parts(expression: exp.Select, engine_dialect: str) -> exp.Select:
    """Outside DuckDB, write QUARTER(x) as EXTRACT(QUARTER FROM x) and truncate x cast to TIMESTAMP."""
    if engine_dialect == "duckdb":
        return expression
    for quarter in list(expression.find_all(exp.Quarter)):
        quarter.replace(exp.Extract(this=exp.var("QUARTER"), expression=quarter.this))
    for truncation in list(expression.find_all(exp.TimestampTrunc, exp.DateTrunc)):
        truncation.set("this", exp.cast(truncation.this, exp.DataType.Type.TIMESTAMP))
    return expression
