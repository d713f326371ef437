"""What leaves the sandbox of an exact result: disclosure control on the engine's cells, then the caller's
outputs, HAVING, ORDER BY and LIMIT computed from the released cells alone.

The engine returns a cell table (``broker.guard.split_cells``): group keys and per-cell statistics. Here,
in this order:

1. the threshold: a cell with fewer than k distinct entities is withheld whole (its statistics become
   NULL); under ``suppressed: drop`` the engine already left such cells out, except with totals;
2. the dominance rule: a measure whose largest contributors dominate a cell has its sums withheld there;
3. with totals, secondary suppression withholds further cells until no withheld cell is a total less
   its released parts;
4. the release plan is evaluated on what remains (``sandbox.evaluate``): outputs, then HAVING, ORDER BY
   and LIMIT, which therefore see withheld cells as NULL, like the caller does.

Under ``suppressed: drop`` rows withheld by the threshold or by secondary suppression are left out
instead of marked; dominated cells are always marked.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import grpc

from broker.errors import DsbrokerError
from broker.guard import GuardedQuery
from broker.guard import internal_names as names
from broker.guard.release_plan import CellPlan, Key, statistics_read
from broker.policy import Dominance
from sandbox.evaluate import ENGINE_TYPES, compile_node, kind_of, wire_value


@dataclass
class Release:
    """The released table, with the cells withheld and by which rule."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    withheld: list[frozenset[int]]  # per row: the positions of its withheld cells
    rolled_up: list[frozenset[int]] = field(default_factory=list)  # per row: the key positions a total spans
    counts: dict[str, int] = field(default_factory=dict)  # cells withheld per rule: min_entities, dominance, secondary
    truncated: bool = False  # rows were cut at the row cap


@dataclass(frozen=True)
class _Answered:
    """One row of the answer before it is encoded: the cell as released, and why cells are withheld."""

    keys: tuple
    statistics: tuple  # withheld statistics are None
    values: tuple
    marked: frozenset[int]
    under: bool
    secondary: bool
    grouping: int


@dataclass(frozen=True)
class _Cell:
    """One row of the cell table as disclosure control sees it."""

    keys: tuple
    statistics: tuple
    entities: int
    grouping: int
    dominated: frozenset[str]  # measures the dominance rule withholds here


def release(names_: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery, *,
            max_rows: int | None = None) -> Release:
    """Apply disclosure control to the engine's cell table for ``guarded`` and compute the answer from it.

    ``max_rows`` cuts the answer (flagging it truncated); by default the guard's cap.
    """
    plan = guarded.cells
    layout, cells = read_cells(names_, types, rows, guarded)
    under = [cell.entities < guarded.min_entities for cell in cells]
    secondary = _secondary(cells, under, plan) if plan.totals else set()
    drop = guarded.suppression == "drop"
    program = compile_plan(plan, layout)
    sums_of = _sums_by_measure(plan)
    counts = {"min_entities": 0, "dominance": 0, "secondary": 0}
    answered: list[_Answered] = []
    for index, cell in enumerate(cells):
        whole = under[index] or index in secondary
        if whole and drop:
            continue
        hidden: set[int] = set()
        if whole:
            statistics = (None,) * len(cell.statistics)
        else:
            hidden = {stat for measure in cell.dominated for stat in sums_of[measure]}
            statistics = tuple(None if i in hidden else value for i, value in enumerate(cell.statistics))
        if program.having is not None and program.having(cell.keys, statistics) is not True:
            continue
        values = tuple(output(cell.keys, statistics) for output in program.outputs)
        marked = set(program.cells) if whole else {i for i in program.cells if program.reads[i] & hidden}
        answered.append(_Answered(cell.keys, statistics, values, frozenset(marked), under[index],
                                  index in secondary, cell.grouping))
    if not plan.engine_ordered:
        # The caller's order, then the keys: the order of rows depends on released values alone, never on
        # the order in which the engine happened to return them.
        answered.sort(key=functools.cmp_to_key(functools.partial(_compare, program.order + program.keys)))
    if plan.limit is not None:
        answered = answered[:plan.limit]
    cap = guarded.max_rows if max_rows is None else max_rows
    truncated = len(answered) > cap
    released, withheld, rolled_up = [], [], []
    for row in answered[:cap]:
        cells_here = len(program.cells)
        counts["min_entities"] += cells_here if row.under else 0
        counts["secondary"] += cells_here if row.secondary and not row.under else 0
        counts["dominance"] += len(row.marked) if not (row.under or row.secondary) else 0
        released.append(tuple(wire_value(value, kind) for value, kind in zip(row.values, program.kinds)))
        withheld.append(row.marked)
        if plan.totals:
            last = len(plan.totals) - 1
            rolled_up.append(frozenset(p for k, p in enumerate(plan.totals) if row.grouping >> (last - k) & 1))
    return Release([o.name for o in plan.outputs], output_types(plan, layout, program), released, withheld, rolled_up,
                   counts, truncated)


def read_cells(names_: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery) -> tuple["_Layout", list]:
    """The engine's cell table for ``guarded`` as cells: keys, statistics, entities, grouping, dominated measures."""
    layout = _Layout.of(names_, types, guarded.cells)
    return layout, [layout.cell(row, guarded.dominance) for row in rows]


def compile_plan(plan: CellPlan, layout: "_Layout") -> "_Program":
    """The plan's expressions compiled for a cell table of ``layout``'s kinds."""
    return _program(plan, tuple(layout.key_kinds), tuple(layout.stat_kinds))


def output_types(plan: CellPlan, layout: "_Layout", program: "_Program") -> list[str]:
    """The engine type name of each output: a key's own, or the kind its computation gives."""
    return [layout.key_types[o.node.index] if isinstance(o.node, Key) else ENGINE_TYPES[kind]
            for o, kind in zip(plan.outputs, program.kinds)]


def engine_cap(guarded: GuardedQuery, max_rows: int) -> int:
    """The most rows to take from the engine: every cell where the answer needs them all, else the row cap."""
    return guarded.engine_rows - 1 if guarded.cells is not None and guarded.cells.whole_table else max_rows


def run(engine, guarded: GuardedQuery, *, timeout_s: float, max_rows: int | None = None) -> Release:
    """Run ``guarded``'s cell query on ``engine`` and release its answer (the sandbox's plaintext path)."""
    cap = guarded.max_rows if max_rows is None else max_rows
    result = engine.execute(guarded.sql, timeout_s=timeout_s, max_rows=engine_cap(guarded, cap))
    check_size(guarded, result.truncated, dataset=guarded.dataset)
    released = release(result.names, result.types, result.rows, guarded, max_rows=cap)
    released.truncated = released.truncated or (result.truncated and not guarded.cells.whole_table)
    return released


def check_size(guarded: GuardedQuery, engine_truncated: bool, *, dataset: str) -> None:
    """Refuse a cell table the engine had to cut where the answer needs every cell (HAVING, ORDER BY, totals)."""
    if not engine_truncated or not guarded.cells.whole_table:
        return
    if guarded.cells.totals:
        raise DsbrokerError(f"the query's table with totals has more than {guarded.engine_rows - 1:,} rows; its totals "
                            "can only be protected whole", reason="TOTALS_TOO_LARGE", code=grpc.StatusCode.OUT_OF_RANGE,
                            table=dataset)
    raise DsbrokerError(f"the query has more than {guarded.engine_rows - 1} groups before its HAVING or ORDER BY; "
                        "group more coarsely or filter", reason="GROUPS_TOO_MANY", code=grpc.StatusCode.OUT_OF_RANGE,
                        table=dataset)


@dataclass(frozen=True)
class _Layout:
    """Where the cell table's columns are, by their internal names, and what kinds they hold."""

    keys: tuple[int, ...]
    statistics: tuple[int, ...]
    grouping: int | None
    dominance: tuple[tuple[int | None, int | None, int | None, int | None], ...]  # total, top, largest, top two
    key_types: tuple[str, ...]
    key_kinds: tuple[str, ...]
    stat_kinds: tuple[str, ...]
    measures: tuple[str, ...]

    @classmethod
    def of(cls, column_names: list[str], types: list[str], plan: CellPlan) -> "_Layout":
        position = {name: i for i, name in enumerate(column_names)}
        keys = tuple(position[names.key(i)] for i in range(plan.keys))
        statistics = tuple(position[names.statistic(i)] for i in range(len(plan.statistics)))
        dominance = tuple(tuple(position.get(column(j)) for column in (
            names.dominance_total, names.dominance_top, names.dominance_largest, names.dominance_top_two))
            for j in range(len(plan.dominated)))
        stat_kinds = tuple("int" if s.kind in ("entities", "rows", "count") else kind_of(types[i])
                           for s, i in zip(plan.statistics, statistics))
        return cls(keys, statistics, position.get(names.GROUPING), dominance, tuple(types[i] for i in keys),
                   tuple(kind_of(types[i]) for i in keys), stat_kinds, plan.dominated)

    def cell(self, row: tuple, dominance: Dominance | None) -> _Cell:
        dominated = frozenset(measure for measure, columns in zip(self.measures, self.dominance)
                              if dominance is not None and _dominated(row, columns, dominance))
        return _Cell(tuple(row[i] for i in self.keys), tuple(row[i] for i in self.statistics),
                     int(row[self.statistics[0]] or 0), int(row[self.grouping]) if self.grouping is not None else 0,
                     dominated)


def _dominated(row: tuple, columns: tuple, dominance: Dominance) -> bool:
    """Whether a cell's largest contributions to one measure break the (n, k) rule or the p% rule.

    Compared exactly. A DOUBLE measure whose totals are not finite cannot be judged: its sums are
    withheld, never an error."""
    total_at, top_at, largest_at, top_two_at = columns
    values = [row[at] if at is not None else None for at in columns]
    if values[0] is None:
        return False
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return True
    total, top, largest, top_two = (None if v is None else Fraction(v) for v in values)
    if dominance.n is not None and top is not None and 100 * top > Fraction(dominance.k) * total:
        return True
    if dominance.p is not None and largest is not None and top_two is not None:
        if 100 * (total - top_two) < Fraction(dominance.p) * largest:
            return True
    return False


@dataclass(frozen=True)
class _Program:
    outputs: tuple
    kinds: tuple[str, ...]
    cells: tuple[int, ...]
    reads: tuple[frozenset[int], ...]  # per output: the statistics it reads
    having: object
    order: tuple
    keys: tuple  # each group key ascending, NULLS LAST: the order of last resort


@functools.lru_cache(maxsize=512)
def _program(plan: CellPlan, key_kinds: tuple[str, ...], stat_kinds: tuple[str, ...]) -> _Program:
    """The plan's expressions compiled for a cell table of these kinds (cached: a plan repeats)."""
    compiled = [compile_node(o.node, list(key_kinds), list(stat_kinds)) for o in plan.outputs]
    having = compile_node(plan.having, list(key_kinds), list(stat_kinds))[0] if plan.having is not None else None
    order = tuple((compile_node(o.node, list(key_kinds), list(stat_kinds))[0], o.descending, o.nulls_first)
                  for o in plan.order)
    keys = tuple((compile_node(Key(i), list(key_kinds), list(stat_kinds))[0], False, False) for i in range(plan.keys))
    return _Program(tuple(f for f, _ in compiled), tuple(k for _, k in compiled), plan.cell_outputs,
                    tuple(frozenset(statistics_read(o.node)) for o in plan.outputs), having, order, keys)


def _compare(order: tuple, a: _Answered, b: _Answered) -> int:
    """ORDER BY on released values: NULLs where the caller's NULLS FIRST/LAST (DuckDB's default) puts them."""
    for value, descending, nulls_first in order:
        x, y = value(a.keys, a.statistics), value(b.keys, b.statistics)
        if x == y:
            continue
        if x is None or y is None:
            return (-1 if x is None else 1) if nulls_first else (1 if x is None else -1)
        try:
            less = x < y
        except TypeError:  # values that do not compare (text against a number): an order, never an error
            less = repr(type(x)) < repr(type(y))
        return (1 if less else -1) if descending else (-1 if less else 1)
    return 0


def _sums_by_measure(plan: CellPlan) -> dict[str, set[int]]:
    sums: dict[str, set[int]] = defaultdict(set)
    for index, statistic in enumerate(plan.statistics):
        if statistic.kind == "sum":
            sums[statistic.measure].add(index)
    return sums


def _secondary(cells: list[_Cell], under: list[bool], plan: CellPlan) -> set[int]:
    """Rows to withhold besides those under the threshold, so that no withheld row of a ROLLUP is the
    difference of its total and its released siblings (nor a total the sum of released rows).

    Each total and the rows it adds up form one equation. While some equation has exactly one withheld
    member, withhold one more: the released sibling with the fewest entities, or, with none left, the
    total itself. Withholding only grows, so this ends; the result may withhold more than the least
    needed (finding the least is NP-hard), never less.
    """
    keys = len(plan.totals)
    rows_by_level: dict[tuple, int] = {}
    for index, cell in enumerate(cells):
        level = keys - bin(cell.grouping).count("1")
        rows_by_level[(level, cell.keys[:level])] = index
    equations: dict[int, list[int]] = defaultdict(list)  # total's row -> the rows it adds up
    for (level, prefix), index in rows_by_level.items():
        if level > 0:
            equations[rows_by_level[(level - 1, prefix[:-1])]].append(index)
    withheld = {index for index, flagged in enumerate(under) if flagged}
    secondary: set[int] = set()
    changed = True
    while changed:
        changed = False
        for total, parts in equations.items():
            members = [total, *parts]
            if sum(member in withheld for member in members) != 1:
                continue
            candidates = [p for p in parts if p not in withheld] or [total]
            chosen = min(candidates, key=lambda i: (cells[i].entities, i))
            withheld.add(chosen)
            secondary.add(chosen)
            changed = True
    return secondary
