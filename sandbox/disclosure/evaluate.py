"""Evaluates a release plan's expressions on released cells: exactly, and without ever failing.

The guard lowers what the caller computes from aggregates into the small language of
:mod:`dsbroker.guard.release_plan`; this module compiles each expression once into a function of one row
of the engine's cell table (its keys and statistics, found by position, :class:`Columns`). Every number
is computed exactly (Python integers and fractions) from the engine's exact cells, whatever the caller's
arithmetic; only the result is given the type DuckDB would give it (integers stay integers, a decimal
literal makes a decimal, ``/`` and AVG make a double), rounded once. A sum of money is never rounded,
and a double is the nearest one to the true value. Only a DOUBLE column's cells are computed as
doubles. Nothing raises on any value: a division by zero, a result beyond ±1e38, or an infinite or
undefined double gives NULL, as DuckDB's ``TRY()`` would. Errors could only tell a caller about
released cells anyway (withheld cells are NULL here), but an answer that never fails is simpler to
reason about. The common cases (a group key, a plain SUM or COUNT of integers) compile to a single
index into the row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from dsbroker.guard.date_texts import year_text
from dsbroker.guard.linear_forms import widest
from dsbroker.guard.release_plan import Average, Const, Grouping, Key, Linear, Node, Stat

LIMIT = 10 ** 38
NUMBER_KINDS = ("int", "decimal", "double")
_DECIMALS = decimal.Context(prec=80)

Compiled = Callable[[tuple], Any]


@dataclass(frozen=True)
class Columns:
    """Where a cell table's keys and statistics are in an engine row, and the kind each holds."""

    keys: tuple[int, ...]
    statistics: tuple[int, ...]
    key_kinds: tuple[str, ...]
    stat_kinds: tuple[str, ...]
    grouping: int | None = None  # with totals: where the row's GROUPING of every key is


def kind_of(engine_type: str) -> str:
    """The kind of an engine column type: a number kind, or text, date, timestamp, bool."""
    name = engine_type.upper()
    if name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                "UBIGINT", "UHUGEINT", "INT", "INT2", "INT4", "INT8"):
        return "int"
    if name.startswith(("DECIMAL", "NUMERIC")):
        return "decimal"
    if name in ("DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8", "DOUBLE PRECISION"):
        return "double"
    if name == "DATE":
        return "date"
    if name.startswith("TIMESTAMP"):
        return "timestamp"
    if name == "BOOLEAN":
        return "bool"
    return "text"


ENGINE_TYPES = {"int": "HUGEINT", "decimal": "DECIMAL", "double": "DOUBLE", "text": "VARCHAR", "date": "DATE",
                "timestamp": "TIMESTAMP", "bool": "BOOLEAN", "null": "VARCHAR"}


def compile_total(node: Node, columns: Columns) -> tuple[Compiled, str]:
    """``node`` compiled (:func:`compile_node`) as a total function: whatever a row holds, it answers,
    NULL where the operators themselves have no answer. The operators never raise on what the guard
    accepts; this is the last line of defence, since an error that depends on a cell is an answer."""
    compiled, kind = compile_node(node, columns)

    def total(row):
        try:
            return compiled(row)
        except (TypeError, ValueError, ArithmeticError):
            return None

    return total, kind


def compile_node(node: Node, columns: Columns) -> tuple[Compiled, str]:
    """``node`` as a function of one engine row, and the kind of what it returns.

    Exact numbers come back as int or Fraction, doubles as float; NULL as None.
    """
    if isinstance(node, Key):
        position, kind = columns.keys[node.index], columns.key_kinds[node.index]
        if kind == "decimal":
            return (lambda row: None if row[position] is None else Fraction(row[position])), kind
        return (lambda row: row[position]), kind
    if isinstance(node, Stat):
        return _statistic(columns.statistics[node.index], columns.stat_kinds[node.index]), \
            columns.stat_kinds[node.index]
    if isinstance(node, Const):
        value = node.value  # numbers stay exact, whatever their kind: 1e-2 is the fraction 1/100
        if isinstance(value, Fraction) and value.denominator == 1:
            value = value.numerator  # a whole number computes as an integer (its kind still types the result)
        return (lambda row: value), node.kind
    if isinstance(node, Linear):
        return _linear(node, columns)
    if isinstance(node, Average):
        return _average(node, columns)
    if isinstance(node, Grouping):
        return _grouping(node, columns), "int"
    return _CALLS[node.op]([compile_node(arg, columns) for arg in node.args])


def direct_position(node: Node, columns: Columns) -> int | None:
    """The row position ``node`` reads as it is, where it is a key or an integer statistic taken whole
    (``SUM(x)`` of an integer measure, a count): the common case, released without computing."""
    if isinstance(node, Key) and columns.key_kinds[node.index] != "decimal":
        return columns.keys[node.index]
    if isinstance(node, Stat) and columns.stat_kinds[node.index] == "int":
        return columns.statistics[node.index]
    if isinstance(node, Linear) and len(node.terms) == 1 and node.terms[0][0] == 1 and node.kind == "int" \
            and columns.stat_kinds[node.terms[0][1]] == "int":
        return columns.statistics[node.terms[0][1]]
    return None


def _grouping(node: Grouping, columns: Columns) -> Compiled:
    """GROUPING(keys) from the row's GROUPING of every key (the cell query's, key 0 the highest bit)."""
    if columns.grouping is None:
        raise AssertionError("the guard accepts GROUPING() with totals only")
    position, shifts = columns.grouping, [len(columns.keys) - 1 - key for key in node.keys]

    def value(row):
        level = 0
        for shift in shifts:
            level = level * 2 + (row[position] >> shift & 1)
        return level

    return value


def _statistic(position: int, kind: str) -> Compiled:
    if kind == "int":
        return lambda row: row[position]
    if kind == "double":
        return lambda row: row[position]
    return lambda row: None if row[position] is None else Fraction(row[position])


def _linear(node: Linear, columns: Columns) -> tuple[Compiled, str]:
    kinds = [columns.stat_kinds[index] for _, index in node.terms]
    kind = widest(node.kind, *kinds)
    positions = [columns.statistics[index] for _, index in node.terms]
    if len(node.terms) == 1 and node.terms[0][0] == 1 and kinds[0] == "int":
        position = positions[0]  # SUM(x) of an integer measure: the engine's exact sum itself
        return (lambda row: row[position]), kind
    if all(c.denominator == 1 for c, _ in node.terms) and all(k == "int" for k in kinds):
        # Whole numbers: integer arithmetic.
        terms = [(c.numerator, p) for (c, _), p in zip(node.terms, positions, strict=True)]
    else:
        terms = [(c, p) for (c, _), p in zip(node.terms, positions, strict=True)]
    exact = [k != "double" for k in kinds]

    def value(row):
        total: Any = 0
        for (coefficient, position), is_exact in zip(terms, exact, strict=True):
            cell = row[position]
            if cell is None:
                return None
            total += coefficient * (cell if isinstance(cell, (int, float)) else Fraction(cell)) if is_exact \
                else float(coefficient) * cell
        return _checked(total)

    return value, kind


def _average(node: Average, columns: Columns) -> tuple[Compiled, str]:
    coefficient = node.coefficient
    total, count = columns.statistics[node.total], columns.statistics[node.count]
    exact = columns.stat_kinds[node.total] != "double"

    def value(row):
        cells, rows = row[total], row[count]
        if cells is None or not rows:
            return None
        if exact:
            return _checked(coefficient * (cells if isinstance(cells, int) else Fraction(cells)) / rows)
        return _checked(float(coefficient) * cells / rows)

    return value, "double"


def _arithmetic(op: str):
    def build(args: list[tuple[Compiled, str]]) -> tuple[Compiled, str]:
        (left, left_kind), (right, right_kind) = args
        if left_kind not in NUMBER_KINDS + ("null",) or right_kind not in NUMBER_KINDS + ("null",):
            # The guard accepts no arithmetic on dates or text; were one to reach here, it is NULL.
            return (lambda row: None), "null"
        kind = "double" if op == "/" else widest(*(k for k in (left_kind, right_kind) if k != "null") or ("int",))

        def value(row):
            a, b = left(row), right(row)
            if a is None or b is None:
                return None
            if op == "/":
                if b == 0:
                    return None
                if isinstance(a, float) or isinstance(b, float):
                    return _checked(a / b)
                if type(a) is int and type(b) is int:  # noqa: E721 - exact ints, not bools
                    return _checked(Fraction(a, b))  # one normalisation, not two
                return _checked(Fraction(a) / b)
            return _checked(a + b if op == "+" else a - b if op == "-" else a * b)

        return value, kind

    return build


def _negate(args):
    ((inner, kind),) = args
    if kind not in NUMBER_KINDS:
        return (lambda row: None), "null"  # minus text or a date: no value, never an error
    return (lambda row: None if (v := inner(row)) is None else -v), kind


_COMPARE = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _comparison(op: str):
    test = _COMPARE[op]

    def build(args):
        (left, _), (right, _) = args

        def value(row):
            a, b = left(row), right(row)
            if a is None or b is None:
                return None
            a, b = _comparable(a, b)
            if a is None:
                return None
            try:
                return test(a, b)
            except TypeError:  # values of kinds that do not compare: NULL, never an error
                return None

        return value, "bool"

    return build


def _comparable(a, b):
    """Two values brought to one kind for comparison (numbers exactly where both are exact)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else (None, None)
    numbers = (int, float, Fraction)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, float) or isinstance(b, float):
            return _to_float(a), _to_float(b)
        return a, b
    if isinstance(a, dt.datetime) != isinstance(b, dt.datetime) and isinstance(a, dt.date) and isinstance(b, dt.date):
        return _as_datetime(a), _as_datetime(b)
    return a, b


def _logic(op: str):
    def build(args):
        (left, _), (right, _) = args

        def value(row):
            a, b = left(row), right(row)
            if op == "and":
                if a is False or b is False:
                    return False
                return None if a is None or b is None else bool(a and b)
            if a is True or b is True:
                return True
            return None if a is None or b is None else bool(a or b)

        return value, "bool"

    return build


def _not(args):
    ((inner, _),) = args
    return (lambda row: None if (v := inner(row)) is None else not v), "bool"


def _in(args):
    (subject, kind), *items = args
    tests = [_comparison("=")([(subject, kind), item])[0] for item in items]

    def value(row):
        if subject(row) is None:
            return None
        found = [test(row) for test in tests]
        if True in found:
            return True
        return None if None in found else False

    return value, "bool"


def _between(args):
    subject, low, high = args
    at_least, at_most = _comparison(">=")([subject, low])[0], _comparison("<=")([subject, high])[0]
    return _logic("and")([(at_least, "bool"), (at_most, "bool")])[0], "bool"


def _date_part(part: str):
    def build(args):
        ((inner, _),) = args

        def value(row):
            day = inner(row)
            if not isinstance(day, dt.date):
                return None
            return day.year if part == "year" else day.month if part == "month" else (day.month - 1) // 3 + 1

        return value, "int"

    return build


def _truncation(unit: str):
    def build(args):
        ((inner, _),) = args

        def value(row):
            day = inner(row)
            if not isinstance(day, dt.date):
                return None
            month = 1 if unit == "year" else day.month if unit == "month" else (day.month - 1) // 3 * 3 + 1
            return dt.datetime(day.year, month, 1)  # DuckDB's date_trunc of a DATE is a TIMESTAMP

        return value, "timestamp"

    return build


def _text(unit: str):
    """strftime's text of a released year (an integer) or month (a truncated timestamp), as DuckDB writes it."""
    def build(args):
        ((inner, _),) = args

        def value(row):
            key = inner(row)
            if unit == "month":
                return f"{year_text(key.year)}-{key.month:02d}" if isinstance(key, dt.date) else None
            if isinstance(key, Fraction) and key.denominator == 1:  # PostgreSQL's EXTRACT is numeric
                key = key.numerator
            return year_text(key) if isinstance(key, int) else None

        return value, "text"

    return build


_CALLS: dict[str, Callable] = {
    "+": _arithmetic("+"), "-": _arithmetic("-"), "*": _arithmetic("*"), "/": _arithmetic("/"), "neg": _negate,
    **{op: _comparison(op) for op in _COMPARE},
    "and": _logic("and"), "or": _logic("or"), "not": _not, "in": _in, "between": _between,
    "year": _date_part("year"), "quarter": _date_part("quarter"), "month": _date_part("month"),
    "trunc_year": _truncation("year"), "trunc_quarter": _truncation("quarter"), "trunc_month": _truncation("month"),
    "text_year": _text("year"), "text_month": _text("month"),
}


def wire_value(value: Any, kind: str) -> Any:
    """A computed value in its kind, as the result table holds it: a double rounded once, from the exact
    value; an exact decimal as Decimal; an integer as int."""
    if value is None or isinstance(value, (str, bool, dt.date)):
        return value
    if kind == "double" and not isinstance(value, float):
        return _to_float(value)
    if isinstance(value, Fraction):
        if kind == "int" or value.denominator == 1 and kind != "decimal":
            return value.numerator // value.denominator
        return _DECIMALS.divide(decimal.Decimal(value.numerator), decimal.Decimal(value.denominator))
    return value


def sort_key(value: Any, *, descending: bool, nulls_first: bool):
    """A key that sorts ``value`` (with ``reverse=descending``) and puts NULLs where they are asked for."""
    nulls_at_end = not nulls_first
    null_flag = 1 if nulls_at_end != descending else 0
    return (null_flag, 0) if value is None else (1 - null_flag, value)


def _to_float(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def _checked(value):
    """``value``, or None where it is out of range or undefined (see the module docstring)."""
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) <= 1e38 else None
    if isinstance(value, Fraction):
        if value.denominator == 1:
            value = value.numerator
        elif abs(value) > LIMIT:
            return None
        else:
            return value
    return value if -LIMIT <= value <= LIMIT else None


def _as_datetime(value: dt.date) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
