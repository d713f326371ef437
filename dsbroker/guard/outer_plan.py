"""The outer plan: what the sandbox runs on the released cells of a two-level query (``split_levels``).

A two-level query is one or more protected aggregates, each guarded, run on the data, disclosure-controlled
and audited exactly as a one-level query, and an outer query over their released tables. The outer query
runs after disclosure control, in the sandbox, on an in-memory engine that holds those released tables and
the grant's lookup columns and nothing else (``sandbox.engine.released_tables``). Withheld cells are NULL
in it, and beside each cell column a mark says whether it is withheld; the outer query, as the guard
rewrote it (``add_withheld_marks``), computes beside each of its outputs whether that output reads a
withheld cell, and such an output is NULL and marked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleasedTable:
    """The released cells of one protected aggregate, as the in-memory engine holds them."""

    name: str  # internal_names.released_table(part)
    part: int  # which of GuardedQuery.parts it is the answer of
    columns: tuple[str, ...]  # that answer's column names
    cells: tuple[int, ...]  # the positions of the columns disclosure control may withhold (each has a mark)


@dataclass(frozen=True)
class OuterLookup:
    """A lookup the outer query reads: its granted columns (the key first), as the in-memory engine holds them."""

    name: str  # internal_names.lookup_table(i)
    table: str  # the served table, "schema.table"
    columns: tuple[str, ...]


@dataclass(frozen=True)
class OuterPlan:
    """The outer query in the engine's dialect, over :attr:`tables` and :attr:`lookups` alone.

    Its result has the answer's columns (:attr:`names`) and after them one mark column per answer column
    that can read a withheld cell: ``marks[i]`` is the result position of column ``i``'s mark, or None.
    """

    sql: str
    names: tuple[str, ...]
    marks: tuple[int | None, ...]
    tables: tuple[ReleasedTable, ...]
    lookups: tuple[OuterLookup, ...] = ()
