"""Engine column types as the guard reasons about them: classes of comparable values, and sums that cannot fail.

The guard itself never reads data, but two kinds of engine error depend on it: comparing a column with a
literal of another type makes the engine cast every value of the column (``street_code = 5`` fails if
and only if some row, of any district, holds a code that is not a number), and a sum in a type the
total can outgrow fails if and only if the values are large. Both are decided here from the types alone.
So is a third: DuckDB compares an integer column with a literal of s decimals by casting each value to
DECIMAL(38, s), which a value of more than 38 - s digits does not fit (``whole_digits``).
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^(TINYINT|SMALLINT|INTEGER|INT|INT2|INT4|INT8|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
                     r"UBIGINT|UHUGEINT|DOUBLE|FLOAT|FLOAT4|FLOAT8|REAL|DOUBLE PRECISION|DECIMAL.*|NUMERIC.*)$")
_TEXT = re.compile(r"^(VARCHAR.*|TEXT|CHAR.*|CHARACTER.*|STRING|BPCHAR.*)$")
# Sums that cannot overflow in the engine: integers up to 64 bits add up in a 128-bit integer (DuckDB) or
# arbitrary precision (PostgreSQL's numeric); DuckDB adds doubles to infinity, never to an error. DECIMAL
# with up to 18 digits adds up in DECIMAL(38). Wider types could outgrow their sum and fail. Spark adds only
# integers up to 64 bits, which translate_sums casts to DECIMAL(19, 0) (its BIGINT sum could overflow); a
# fraction or a double would lose digits in that cast, so they are not summed there.
_SUMMABLE = {
    "duckdb": re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|DOUBLE|FLOAT|"
                         r"REAL|DECIMAL\((1[0-8]|[1-9]),\s*\d+\))$"),
    "postgres": re.compile(r"^(SMALLINT|INTEGER|BIGINT|INT2|INT4|INT8|NUMERIC.*|DECIMAL.*)$"),
    "spark": re.compile(r"^(TINYINT|SMALLINT|INT|INTEGER|BIGINT|BYTE|SHORT|LONG|DECIMAL\((1[0-8]|[1-9]),\s*0\))$"),
}


def type_class(engine_type: str) -> str:
    """``number``, ``text``, ``date``, ``timestamp``, ``bool``, or ``other`` for an engine type name."""
    name = engine_type.upper().strip()
    if _NUMBER.match(name):
        return "number"
    if _TEXT.match(name):
        return "text"
    if name == "DATE":
        return "date"
    if name.startswith("TIMESTAMP"):
        return "timestamp"
    if name in ("BOOLEAN", "BOOL"):
        return "bool"
    return "other"


# The digits before the point a value of an exact numeric type may have (DuckDB's and PostgreSQL's names); a
# 128-bit integer counts 38, since compared with a whole number it stays an integer and any decimal is refused.
_WHOLE_DIGITS = {"TINYINT": 3, "UTINYINT": 3, "SMALLINT": 5, "INT2": 5, "USMALLINT": 5, "INTEGER": 10, "INT": 10,
                 "INT4": 10, "UINTEGER": 10, "BIGINT": 19, "INT8": 19, "UBIGINT": 20, "HUGEINT": 38, "UHUGEINT": 38}
_DECIMAL = re.compile(r"^(?:DECIMAL|NUMERIC)\((\d+),\s*(\d+)\)$")
MOST_DIGITS = 38  # the widest decimal the engines hold exactly (DuckDB's DECIMAL(38, s))


def whole_digits(engine_type: str) -> int | None:
    """The digits before the point a value of ``engine_type`` may have, for the exact numeric types (a DECIMAL's
    width less its scale); None for any other type (a double is compared as a double and never fails)."""
    name = engine_type.upper().strip()
    decimal = _DECIMAL.match(name)
    if decimal:
        return int(decimal[1]) - int(decimal[2])
    return _WHOLE_DIGITS.get(name)


def summable(engine_type: str, dialect: str) -> bool:
    """Whether SUM over a column of ``engine_type`` cannot fail on ``dialect`` whatever the values."""
    pattern = _SUMMABLE.get(dialect)
    return bool(pattern and pattern.match(engine_type.upper().strip()))
