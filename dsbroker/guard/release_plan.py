"""The release plan: what the sandbox computes from the engine's cells after disclosure control.

The engine computes only cells: group keys and per-cell statistics (counts, per-measure sums, minima,
maxima) that cannot fail or overflow for any data. Disclosure control then withholds cells in the
sandbox (the threshold, the dominance rule, secondary suppression). Only after that is anything
computed from the cells: the caller's outputs (``2 * SUM(a) - SUM(b) / 100``, ratios), HAVING,
ORDER BY and LIMIT. They see the released cells alone, withheld cells as NULL, so whatever they
compute, and whether it succeeds, depends on nothing disclosure control withheld.

The plan is data, not code: a small expression language (:data:`Node`) over the cell table's keys and
statistics, which ``sandbox.disclosure.release`` evaluates exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

from dsbroker.guard.grouping_sets import is_rollup


@dataclass(frozen=True)
class Key:
    """Group key ``index`` of the cell table."""

    index: int


@dataclass(frozen=True)
class Stat:
    """Statistic ``index`` of the cell table."""

    index: int


@dataclass(frozen=True)
class Const:
    """A literal: a number (exact, of ``kind`` int, decimal or double), text, a date, a boolean or NULL."""

    value: Fraction | str | dt.date | dt.datetime | bool | None
    kind: str  # "int", "decimal", "double", "text", "date", "timestamp", "bool" or "null"


@dataclass(frozen=True)
class Linear:
    """The SUM of a linear form, term by term: ``sum(coefficient * statistic)``, done in ``kind``."""

    terms: tuple[tuple[Fraction, int], ...]  # (coefficient, index of a SUM statistic)
    kind: str  # "int", "decimal" or "double": the type the caller's arithmetic implies


@dataclass(frozen=True)
class Average:
    """``coefficient * sum / count`` (AVG of a measure times a number), as a double."""

    coefficient: Fraction
    total: int  # index of the measure's SUM statistic
    count: int  # index of its COUNT statistic


@dataclass(frozen=True)
class Grouping:
    """SQL's ``GROUPING(keys)`` of a row with totals: per key listed, 1 where the row is a total over it, as the
    bits of a number (the first key the highest). It reads which level the row is, never a cell's data."""

    keys: tuple[int, ...]


@dataclass(frozen=True)
class Call:
    """An operator applied to its arguments.

    Arithmetic ``+ - * /`` and ``neg``; comparisons ``= <> < <= > >=``; ``and``, ``or``, ``not``;
    ``in`` (the first argument among the rest), ``between``; date parts ``year``, ``quarter``, ``month``
    and ``trunc_year``, ``trunc_quarter``, ``trunc_month``.
    """

    op: str
    args: tuple[Node, ...]


Node = Key | Stat | Const | Linear | Average | Grouping | Call

STATISTIC_KINDS = ("entities", "rows", "sum", "count", "min", "max")


@dataclass(frozen=True)
class Statistic:
    """One per-cell statistic the engine computes: ``entities`` (distinct entities: the threshold's
    count), ``rows`` (COUNT(*)), or the ``sum``, ``count``, ``min`` or ``max`` of a measure."""

    kind: str
    measure: str | None = None


@dataclass(frozen=True)
class Output:
    """One column of the answer: its name, what it computes, and whether it is a cell disclosure
    control may withhold (it reads a statistic) or a key (it reads only group keys and literals)."""

    name: str
    node: Node
    cell: bool


@dataclass(frozen=True)
class Ordering:
    """One ORDER BY term, applied to the released values."""

    node: Node
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class CellPlan:
    """The layout of the engine's cell table and what to compute from its released cells.

    The table's columns, read by name (``dsbroker.guard.internal_names``): ``key(i)`` for each group key,
    ``statistic(i)`` for each statistic (0 the count of entities); ``contributors(j)`` for each measure of
    ``summed``; with totals ``GROUPING``; with the dominance rule the per-measure columns of ``dominated``.
    """

    keys: int
    statistics: tuple[Statistic, ...]
    outputs: tuple[Output, ...]
    having: Node | None = None
    order: tuple[Ordering, ...] = ()
    limit: int | None = None  # the caller's LIMIT, applied after HAVING and ORDER BY
    engine_ordered: bool = False  # the engine ordered (by keys only) and cut the rows already
    summed: tuple[str, ...] = ()  # the measures a SUM or AVG reads: each cell counts its contributors to each
    dominated: tuple[str, ...] = ()  # the measures the dominance rule tests, by index in its columns
    totals: tuple[int, ...] = ()  # with totals: the output position of each key, in the order GROUPING() lists them
    # With totals: per grouping set, the indices of the keys it groups by (dsbroker.guard.grouping_sets); none
    # listed, a ROLLUP's.
    grouping_sets: tuple[tuple[int, ...], ...] = ()
    whole_table: bool = False  # HAVING, ORDER BY or totals read every cell: the engine may not cut the table

    @property
    def rollup(self) -> bool:
        """Whether the totals are a ROLLUP's (a tree of equations, which secondary suppression protects)."""
        return bool(self.totals) and (not self.grouping_sets or is_rollup(self.grouping_sets, len(self.totals)))

    def fixed_keys(self, grouping: int) -> tuple[int, ...]:
        """The indices of the keys a row of totals groups by, from its GROUPING() bitmask (the first key the
        highest bit, 1 where the row totals over the key)."""
        last = len(self.totals) - 1
        return tuple(j for j in range(len(self.totals)) if not grouping >> (last - j) & 1)

    @property
    def cell_outputs(self) -> tuple[int, ...]:
        """The positions of the outputs that are cells."""
        return tuple(i for i, output in enumerate(self.outputs) if output.cell)


def statistics_read(node: Node | None) -> set[int]:
    """The statistics ``node`` reads."""
    if node is None or isinstance(node, (Key, Const, Grouping)):
        return set()
    if isinstance(node, Stat):
        return {node.index}
    if isinstance(node, Linear):
        return {index for _, index in node.terms}
    if isinstance(node, Average):
        return {node.total, node.count}
    return set().union(*(statistics_read(arg) for arg in node.args))


def keys_read(node: Node | None) -> set[int]:
    """The group keys ``node`` reads."""
    if isinstance(node, Key):
        return {node.index}
    if isinstance(node, Grouping):
        return set(node.keys)
    if isinstance(node, Call):
        return set().union(*(keys_read(arg) for arg in node.args))
    return set()


def describe(plan: CellPlan) -> str:
    """The plan in one line of SQL-like text over the cell table's columns, for explain and the fixtures."""
    from dsbroker.guard import internal_names as names

    def text(node: Node) -> str:
        if isinstance(node, Key):
            return names.key(node.index)
        if isinstance(node, Stat):
            return names.statistic(node.index)
        if isinstance(node, Const):
            return _const_text(node)
        if isinstance(node, Linear):
            terms = " + ".join(f"{_number(c)} * {names.statistic(i)}" if c != 1 else names.statistic(i)
                               for c, i in node.terms)
            return f"({terms})" if len(node.terms) > 1 else terms
        if isinstance(node, Grouping):
            return f"GROUPING({', '.join(names.key(i) for i in node.keys)})"
        if isinstance(node, Average):
            average = f"{names.statistic(node.total)} / {names.statistic(node.count)}"
            return average if node.coefficient == 1 else f"{_number(node.coefficient)} * ({average})"
        return _call_text(node, text)

    parts = [", ".join(f"{text(o.node)} AS {o.name}" for o in plan.outputs)]
    if plan.having is not None:
        parts.append(f"HAVING {text(plan.having)}")
    if plan.order:
        parts.append("ORDER BY " + ", ".join(
            f"{text(o.node)}{' DESC' if o.descending else ''}{' NULLS FIRST' if o.nulls_first else ''}"
            for o in plan.order) + (" (in the engine)" if plan.engine_ordered else ""))
    if plan.limit is not None:
        parts.append(f"LIMIT {plan.limit}")
    if plan.dominated:
        parts.append("dominance: " + ", ".join(plan.dominated))
    return " | ".join(parts)


def _const_text(node: Const) -> str:
    if node.kind in ("int", "decimal", "double"):
        return _number(cast(Fraction, node.value))  # a number's value is exact
    return "NULL" if node.value is None else repr(node.value) if node.kind == "text" else str(node.value)


def _call_text(node: Call, text: Callable[[Node], str]) -> str:
    if node.op in ("neg", "not"):
        return f"{'-' if node.op == 'neg' else 'NOT '}({text(node.args[0])})"
    if node.op == "in":
        return f"{text(node.args[0])} IN ({', '.join(text(a) for a in node.args[1:])})"
    if node.op == "between":
        return f"{text(node.args[0])} BETWEEN {text(node.args[1])} AND {text(node.args[2])}"
    if len(node.args) == 1:
        return f"{node.op}({text(node.args[0])})"
    return f"({text(node.args[0])} {node.op.upper()} {text(node.args[1])})"


def _number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"
