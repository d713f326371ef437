"""translate_sums: on Spark, add up the dataset's integers as DECIMAL(19, 0), whose sums cannot overflow.

DuckDB adds BIGINT up in a 128-bit integer and PostgreSQL in numeric, so a sum of money in fen is exact and
never fails. Spark adds BIGINT up in BIGINT: its sum fails (ANSI mode) or wraps (without it) once a total passes
2^63, an engine error that would depend on the data. DECIMAL(19, 0) holds every BIGINT, and Spark adds
DECIMAL(p, 0) up in DECIMAL(p + 10, 0), so the sum is exact for any table of fewer than 10^10 rows; a sum of
those sums (a cell's total of its taxpayers' totals) is DECIMAL(38, 0). The cast goes on each column of the
dataset read inside a SUM, so literal coefficients (``0.5 * vat_paid``) keep their digits in decimal
arithmetic. It does not depend on the column types (the broker may not have them): on Spark only integer
measures are summable (:func:`dsbroker.guard.column_types.summable`), so the cast never drops a digit.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from dsbroker.guard.internal_names import PREFIX

EXACT_INTEGER = "DECIMAL(19, 0)"


def translate_sums(expression: exp.Select, engine_dialect: str) -> exp.Select:
    """On Spark, cast each dataset column read inside a SUM to DECIMAL(19, 0)."""
    if engine_dialect != "spark":
        return expression
    for total in list(expression.find_all(exp.Sum)):
        for column in list(total.find_all(exp.Column)):
            if not column.name.startswith(PREFIX) and not isinstance(column.parent, exp.Cast):
                column.replace(exp.cast(column.copy(), exp.DataType.build(EXACT_INTEGER)))
    return expression
