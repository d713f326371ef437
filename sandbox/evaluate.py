"""Evaluates a release plan's expressions on released cells: exactly, and without ever failing.

The guard lowers what the caller computes from aggregates into the small language of
:mod:`broker.guard.release_plan`; this module compiles each expression once into a function of one
row's keys and statistics. Every number is computed exactly (Python integers and fractions) from the
engine's exact cells, whatever the caller's arithmetic; only the result is given the type DuckDB would
give it (integers stay integers, a decimal literal makes a decimal, ``/`` and AVG make a double), rounded
once. A sum of money is never rounded, and a double is the nearest one to the true value. Only a
DOUBLE column's cells are computed as doubles. Nothing raises on any value: a
division by zero, a result beyond ±1e38 (integers and decimals), or an infinite or undefined double
gives NULL, as DuckDB's ``TRY()`` would. Errors could only tell a caller about released cells anyway
(withheld cells are NULL here), but an answer that never fails is simpler to reason about.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from fractions import Fraction
from typing import Any, Callable

from broker.guard.linear_forms import widest
from broker.guard.release_plan import Average, Call, Const, Key, Linear, Node, Stat

LIMIT = Fraction(10) ** 38
NUMBER_KINDS = ("int", "decimal", "double")
_DECIMALS = decimal.Context(prec=80)

Row = tuple[tuple, tuple]  # (keys, statistics) of one cell
Compiled = Callable[[tuple, tuple], Any]


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


def compile_node(node: Node, key_kinds: list[str], stat_kinds: list[str]) -> tuple[Compiled, str]:
    """``node`` as a function of (keys, statistics) of one row, and the kind of what it returns.

    Exact numbers come back as int (kind int) or Fraction (kind decimal), doubles as float; NULL as None.
    """
    if isinstance(node, Key):
        index = node.index
        kind = key_kinds[index]
        if kind == "decimal":
            return (lambda keys, stats: None if keys[index] is None else _exact(keys[index])), kind
        return (lambda keys, stats: keys[index]), kind
    if isinstance(node, Stat):
        index = node.index
        kind = stat_kinds[index]
        return (lambda keys, stats: None if stats[index] is None else _number(stats[index])), kind
    if isinstance(node, Const):
        return _constant(node)
    if isinstance(node, Linear):
        return _linear(node, stat_kinds)
    if isinstance(node, Average):
        return _average(node, stat_kinds)
    args = [compile_node(arg, key_kinds, stat_kinds) for arg in node.args]
    return _CALLS[node.op](args)


def _constant(node: Const) -> tuple[Compiled, str]:
    value = node.value  # numbers stay exact, whatever their kind: 1e-2 is the fraction 1/100
    return (lambda keys, stats: value), node.kind


def _linear(node: Linear, stat_kinds: list[str]) -> tuple[Compiled, str]:
    kind = widest(node.kind, *(stat_kinds[index] for _, index in node.terms))
    terms = node.terms

    def value(keys, stats):
        total: Any = 0
        for coefficient, index in terms:
            cell = stats[index]
            if cell is None:
                return None
            total += coefficient * _number(cell)
        return _checked(total)

    return value, kind


def _average(node: Average, stat_kinds: list[str]) -> tuple[Compiled, str]:
    coefficient, total, count = node.coefficient, node.total, node.count

    def value(keys, stats):
        cells, rows = stats[total], stats[count]
        if cells is None or not rows:
            return None
        return _checked(coefficient * _number(cells) / rows)

    return value, "double"


def _arithmetic(op: str):
    def build(args: list[tuple[Compiled, str]]) -> tuple[Compiled, str]:
        (left, left_kind), (right, right_kind) = args
        if left_kind not in NUMBER_KINDS + ("null",) or right_kind not in NUMBER_KINDS + ("null",):
            return _date_arithmetic(op, args)
        kind = "double" if op == "/" else widest(*(k for k in (left_kind, right_kind) if k != "null") or ("int",))

        def value(keys, stats):
            a, b = left(keys, stats), right(keys, stats)
            if a is None or b is None:
                return None
            if op == "/":
                if b == 0:
                    return None
                return _checked(a / b if isinstance(a, float) or isinstance(b, float) else Fraction(a) / b)
            return _checked(a + b if op == "+" else a - b if op == "-" else a * b)

        return value, kind

    return build


def _date_arithmetic(op: str, args):
    # The guard accepts no arithmetic on dates; were one to reach here, it is NULL, never an error.
    return (lambda keys, stats: None), "null"


def _negate(args):
    ((inner, kind),) = args
    return (lambda keys, stats: None if (v := inner(keys, stats)) is None else -v), kind


def _comparison(op: str):
    def build(args):
        (left, left_kind), (right, right_kind) = args

        def value(keys, stats):
            a, b = left(keys, stats), right(keys, stats)
            if a is None or b is None:
                return None
            a, b = _comparable(a, b)
            if a is None:
                return None
            try:
                return {"=": a == b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
            except TypeError:  # values of kinds that do not compare: NULL, never an error
                return None

        return value, "bool"

    return build


def _comparable(a, b):
    """Two values brought to one kind for comparison (numbers exactly where both are exact)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else (None, None)
    numbers = (int, float, Fraction, decimal.Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, float) or isinstance(b, float):
            return _to_float(a), _to_float(b)
        return Fraction(a), Fraction(b)
    if isinstance(a, dt.datetime) != isinstance(b, dt.datetime) and isinstance(a, dt.date) and isinstance(b, dt.date):
        return (_as_datetime(a), _as_datetime(b))
    return a, b


def _logic(op: str):
    def build(args):
        (left, _), (right, _) = args

        def value(keys, stats):
            a, b = left(keys, stats), right(keys, stats)
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
    return (lambda keys, stats: None if (v := inner(keys, stats)) is None else not v), "bool"


def _in(args):
    (subject, kind), *items = args
    tests = [_comparison("=")([(subject, kind), item])[0] for item in items]

    def value(keys, stats):
        if subject(keys, stats) is None:
            return None
        found = [test(keys, stats) for test in tests]
        if True in found:
            return True
        return None if None in found else False

    return value, "bool"


def _between(args):
    subject, low, high = args
    at_least, at_most = _comparison(">=")([subject, low])[0], _comparison("<=")([subject, high])[0]
    both = _logic("and")([(at_least, "bool"), (at_most, "bool")])[0]
    return both, "bool"


def _date_part(part: str):
    def build(args):
        ((inner, _),) = args

        def value(keys, stats):
            day = inner(keys, stats)
            if not isinstance(day, dt.date):
                return None
            return day.year if part == "year" else day.month if part == "month" else (day.month - 1) // 3 + 1

        return value, "int"

    return build


def _truncation(unit: str):
    def build(args):
        ((inner, _),) = args

        def value(keys, stats):
            day = inner(keys, stats)
            if not isinstance(day, dt.date):
                return None
            month = 1 if unit == "year" else day.month if unit == "month" else (day.month - 1) // 3 * 3 + 1
            return dt.datetime(day.year, month, 1)  # DuckDB's date_trunc of a DATE is a TIMESTAMP

        return value, "timestamp"

    return build


_CALLS: dict[str, Callable] = {
    "+": _arithmetic("+"), "-": _arithmetic("-"), "*": _arithmetic("*"), "/": _arithmetic("/"), "neg": _negate,
    **{op: _comparison(op) for op in ("=", "<>", "<", "<=", ">", ">=")},
    "and": _logic("and"), "or": _logic("or"), "not": _not, "in": _in, "between": _between,
    "year": _date_part("year"), "quarter": _date_part("quarter"), "month": _date_part("month"),
    "trunc_year": _truncation("year"), "trunc_quarter": _truncation("quarter"), "trunc_month": _truncation("month"),
}


def wire_value(value: Any, kind: str) -> Any:
    """A computed value in its kind, as the result table holds it: a double rounded once, from the exact
    value; an exact decimal as Decimal; an integer as int."""
    if value is None:
        return None
    if kind == "double" and isinstance(value, (int, Fraction)) and not isinstance(value, bool):
        return _to_float(value)
    if kind == "decimal" and isinstance(value, Fraction):
        return _DECIMALS.divide(decimal.Decimal(value.numerator), decimal.Decimal(value.denominator))
    if kind == "int" and isinstance(value, Fraction):
        return int(value)
    return value


def _exact(value) -> int | Fraction:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return Fraction(value)


def _number(value):
    """An engine number for exact arithmetic: integers and decimals exact, doubles as they are."""
    return value if isinstance(value, float) else _exact(value)


def _to_float(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)


def _checked(value):
    """``value``, or None where it is out of range or undefined (see the module docstring)."""
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) <= 1e38 else None
    if abs(value) > LIMIT:
        return None
    return value.numerator if isinstance(value, Fraction) and value.denominator == 1 else value


def _as_datetime(value: dt.date) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime(value.year, value.month, value.day)
