"""A two-level answer: the outer query computed on the released tables of its protected aggregates alone.

Each protected aggregate was released as a one-level answer is (the threshold, the dominance rule, the
released-cell auditor, which records every cell of it that leaves disclosure control: all of them may reach
the outer query, whatever it keeps of them). Here those released tables, withheld cells NULL and each cell
column's marks beside it, and the granted columns of the lookups the outer query reads, go into an
in-memory engine of their own (``sandbox.engine.released_tables``), and the outer query runs there. Its
answer's cells are withheld where its marks say so: where they read a withheld cell.
"""

from __future__ import annotations

import decimal
import time
from dataclasses import dataclass
from typing import Callable

import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError
from dsbroker.guard import GuardedQuery
from dsbroker.guard import internal_names as names
from dsbroker.guard.outer_plan import OuterLookup, OuterPlan
from sandbox.disclosure.release import Release, check_size, engine_cap, release
from sandbox.engine.interface import Engine, EngineResult
from sandbox.engine.released_tables import MemoryTable, run_on_released

DECIMAL_DIGITS = 38  # DuckDB's widest DECIMAL
MOST_LOOKUP_ROWS = 100_000  # a code list; the sandbox reads no more of one


@dataclass
class TwoLevelAnswer(Release):
    """The outer query's answer, and the time the engine spent on the protected aggregates."""

    micros: int = 0


def run_two_levels(engine: Engine, guarded: GuardedQuery, *, max_rows: int, deadline: float,
                   release_part: Callable[[EngineResult, GuardedQuery], Release] | None = None) -> TwoLevelAnswer:
    """Run each protected aggregate of ``guarded`` on ``engine``, release it (``release_part``: the sandbox's,
    with the auditor; by default disclosure control alone), and compute the outer query on what was released.
    ``deadline`` (``time.monotonic``) bounds the whole."""
    if guarded.outer is None:
        raise AssertionError("a two-level query has an outer plan")
    releases: list[Release] = []
    micros = 0
    for part in guarded.parts:
        if part.cells is None:
            raise AssertionError("a protected aggregate has a cell plan")
        result = engine.execute(part.sql, timeout_s=_left(deadline), max_rows=engine_cap(part, max_rows))
        check_size(part, result.truncated, dataset=guarded.dataset)
        released = release_part(result, part) if release_part is not None else release(
            result.names, result.types, result.rows, part, max_rows=max_rows, deadline=deadline)
        if released.truncated or (result.truncated and not part.cells.whole_table):
            # The outer query reads every cell (a share of the total, a rank): a table cut at the cap is wrong.
            raise DsbrokerError(f"an aggregate the outer query reads has more than {max_rows} groups; group more "
                                "coarsely or filter", reason="GROUPS_TOO_MANY", table=guarded.dataset)
        releases.append(released)
        micros += result.micros
    lookups = [lookup_table(engine, lookup, timeout_s=_left(deadline)) for lookup in guarded.outer.lookups]
    answer = two_level_answer(guarded.outer, releases, lookups, timeout_s=_left(deadline), max_rows=max_rows,
                              dataset=guarded.dataset)
    return TwoLevelAnswer(answer.names, answer.types, answer.rows, answer.withheld, counts=answer.counts,
                          truncated=answer.truncated, micros=micros)


def _left(deadline: float) -> float:
    """The time left before ``deadline``; past it, the query is stopped."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
    return left


def two_level_answer(outer: OuterPlan, releases: list[Release], lookups: list[MemoryTable], *, timeout_s: float,
                     max_rows: int, dataset: str) -> Release:
    """Run ``outer`` on ``releases`` (one per protected aggregate, in order) and ``lookups``; the answer."""
    tables = [released_table(table.name, releases[table.part], table.cells) for table in outer.tables] + lookups
    result = run_on_released(outer.sql, tables, timeout_s=timeout_s, max_rows=max_rows, dataset=dataset)
    width = len(outer.names)
    withheld = [frozenset(i for i, mark in enumerate(outer.marks) if mark is not None and row[mark])
                for row in result.rows]
    counts = {rule: sum(r.counts.get(rule, 0) for r in releases) for rule in ("min_entities", "dominance",
                                                                               "secondary", "audit")}
    return Release(list(outer.names), result.types[:width], [row[:width] for row in result.rows], withheld,
                   counts=counts, truncated=result.truncated)


def released_table(name: str, released: Release, cells: tuple[int, ...]) -> MemoryTable:
    """A released answer as an in-memory table: its columns, withheld cells NULL, and a mark beside each cell."""
    columns = [(column, _memory_type(kind, [row[i] for row in released.rows]))
               for i, (column, kind) in enumerate(zip(released.names, released.types, strict=True))]
    columns += [(names.withheld_mark(p), "BOOLEAN") for p in cells]
    rows = [tuple(row) + tuple(p in marked for p in cells)
            for row, marked in zip(released.rows, released.withheld, strict=True)]
    return MemoryTable(name, tuple(columns), rows)


def lookup_table(engine: Engine, lookup: OuterLookup, *, timeout_s: float) -> MemoryTable:
    """The granted columns of a lookup, read from the owner's engine (public codes, no dataset row)."""
    schema, table = lookup.table.split(".")
    query = exp.select(*(exp.column(c, quoted=True) for c in lookup.columns)).from_(exp.table_(table, db=schema))
    result = engine.execute(query.sql(dialect=engine.dialect), timeout_s=timeout_s, max_rows=MOST_LOOKUP_ROWS)
    return MemoryTable(lookup.name, tuple(zip(lookup.columns, (_memory_type(t, []) for t in result.types),
                                              strict=True)), result.rows)


def _memory_type(kind: str, values: list) -> str:
    """The in-memory type of a released column: its own, and for a computed decimal (exact, of any scale) the
    narrowest DECIMAL that holds every value, or DOUBLE where none does."""
    if kind.upper() != "DECIMAL":
        return kind
    scale = whole = 0
    for value in values:
        if isinstance(value, decimal.Decimal) and value.is_finite():
            _, value_digits, exponent = value.normalize().as_tuple()
            assert isinstance(exponent, int)  # a finite Decimal's exponent is a number
            scale = max(scale, -exponent)
            whole = max(whole, len(value_digits) + exponent)
    if max(whole, 1) + scale > DECIMAL_DIGITS:
        return "DOUBLE"
    return f"DECIMAL({DECIMAL_DIGITS}, {scale})"
