"""The blocks: the finest partition of a dataset's rows that the released cells can tell apart.

A query's cells are the groups of the rows its WHERE (with the grant's row filter, ranges on their grid)
keeps, by its group keys: its *coverage* (``GuardedQuery.coverage``). Two rows that fall in the same cell
of every released coverage are never separated by any combination of released cells, so the auditor need
not look finer: rows are grouped by their *signature*, per coverage the cell they fall in (or none), and
each group is a block. This is the atom partition (the cross product of the group and filter columns'
values, the range grid, the row filter) merged wherever no released query splits it, so the blocks are
never more, and usually far fewer, than the atoms.

One engine query gives every block with its entities' contributions (per entity: rows, and per measure
the total and the count of values), from which the auditor judges any union of blocks exactly as the cell
rules judge a cell: distinct entities, contributors to a sum, the largest contributions.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import sqlglot
import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError
from dsbroker.guard import internal_names as names

# The most (block, entity) pairs one audit reads from the engine. A larger answer would cost the sandbox
# more memory than any answer is worth, so the query is refused rather than released unaudited.
MOST_BLOCK_ENTITIES = 2_000_000


Contribution = tuple  # one entity's part of a block: (rows, per measure its total or None, per measure its count)


@dataclass
class Blocks:
    """The blocks of the rows some coverages read: each block's signature (per coverage, the keys of the cell
    it falls in, or None) and its entities' contributions (entity -> :data:`Contribution`), with the
    measures in the order the contributions hold them."""

    signatures: list[tuple]
    contributions: list[dict[Any, Contribution]]
    measures: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockLayout:
    """How to read a coverage's cell from a row of :func:`block_query`: per coverage, the index of its
    condition among the query's distinct conditions and the indexes of its keys among its distinct keys."""

    conditions: int
    keys: int
    coverages: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def width(self) -> int:
        """The signature's columns: one per distinct condition, then one per distinct key."""
        return self.conditions + self.keys

    def signature(self, flat: tuple) -> tuple:
        """Per coverage, the keys of the cell a row falls in, or None, from the row's signature columns."""
        at = self.conditions
        return tuple(tuple(flat[at + k] for k in keys) if flat[condition] else None
                     for condition, keys in self.coverages)


def block_query(coverages: list[str], *, dataset: str, entity: str, measures: list[str],
                dialect: str) -> tuple[str, BlockLayout]:
    """The engine query that groups the rows of ``coverages`` by signature and entity (see the module), and
    how to read each coverage's cell from its rows.

    Coverages share conditions (a month's street table and its street x industry table read the same rows)
    and keys, so the query has one column per distinct condition (whether a row meets it) and one per
    distinct key, shown only where a condition of a coverage with that key holds. Each coverage's cell
    follows exactly (its condition, and its keys where it holds), so the blocks are the same as with a
    condition and keys per coverage, with far fewer columns for the engine to group by."""
    table = dataset.split(".")[1]
    parsed = [_qualified(sql, table, dialect) for sql in coverages]
    joins: dict[str, exp.Join] = {}
    conditions: dict[str, tuple[int, exp.Expr]] = {}  # by SQL text: place (first seen first) and condition
    keys: dict[str, tuple[int, exp.Expr]] = {}
    shown_by: dict[str, list[int]] = {}  # key -> the conditions of the coverages whose cells it keys
    layout: list[tuple[int, tuple[int, ...]]] = []
    for select in parsed:  # shared trees: read here, copied where used
        matched: list[exp.Expr] = []
        for join in select.args.get("joins") or []:
            lookup = join.this.name
            if lookup not in joins:
                joins[lookup] = exp.Join(this=join.this.copy(), on=join.args["on"].copy(), side="LEFT")
            if join.side.upper() != "LEFT":
                # An inner join keeps only the rows its lookup has a row for.
                key = next(c for c in join.args["on"].find_all(exp.Column) if c.table == lookup)
                matched.append(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())))
        where = select.args.get("where")
        parts = ([where.this.copy()] if where is not None else []) + matched
        condition = exp.and_(*parts) if parts else exp.true()
        inside = exp.func("COALESCE", exp.paren(condition), exp.false())
        condition_at = _index(conditions, inside.sql(dialect=dialect), condition)
        positions = []
        for key in (e.unalias() for e in select.expressions if not isinstance(e.unalias(), exp.Literal)):
            text = key.sql(dialect=dialect)
            positions.append(_index(keys, text, key))
            if condition_at not in shown_by.setdefault(text, []):
                shown_by[text].append(condition_at)
        layout.append((condition_at, tuple(positions)))
    bare = [exp.paren(condition) for _, condition in conditions.values()]
    listed = [exp.func("COALESCE", condition.copy(), exp.false()) for condition in bare]
    columns: list[exp.Expr] = [exp.alias_(inside.copy(), f"{names.PREFIX}in{i}") for i, inside in enumerate(listed)]
    for position, (text, (_, key)) in enumerate(keys.items()):
        shown = exp.or_(*(listed[i].copy() for i in shown_by[text])) if len(shown_by[text]) > 1 else \
            listed[shown_by[text][0]].copy()
        columns.append(exp.alias_(exp.Case(ifs=[exp.If(this=shown, true=key.copy())]), f"{names.PREFIX}k{position}"))
    signature_width = len(columns)
    columns.append(exp.alias_(exp.column(entity, table=table), f"{names.PREFIX}entity"))
    columns.append(exp.alias_(exp.Count(this=exp.Star()), f"{names.PREFIX}rows"))
    for position, measure in enumerate(measures):
        column = exp.column(measure, table=table)
        columns.append(exp.alias_(exp.Sum(this=column.copy()), f"{names.PREFIX}sum{position}"))
        columns.append(exp.alias_(exp.Count(this=column), f"{names.PREFIX}count{position}"))
    schema, name = dataset.split(".")
    query = exp.Select(expressions=columns).from_(exp.table_(name, db=schema))
    for join in joins.values():
        query = query.join(join, copy=False)
    # The WHERE keeps a row when some condition is true, which the conditions read bare say as well as their
    # COALESCEs (a NULL is not true either way); bare, the engine can push them into its scan (DuckDB prunes
    # row groups by them, halving the audit's engine time on the bench).
    query = query.where(exp.or_(*bare) if len(bare) > 1 else bare[0], copy=False)
    group = [exp.Literal.number(i + 1) for i in range(signature_width + 1)]
    query.set("group", exp.Group(expressions=group))
    return query.sql(dialect=dialect), BlockLayout(len(conditions), len(keys), tuple(layout))


def _index(seen: dict[str, tuple[int, exp.Expr]], text: str, expression: exp.Expr) -> int:
    """The place of ``text`` among ``seen`` (place and expression by SQL text), added last if new."""
    if text not in seen:
        seen[text] = (len(seen), expression)
    return seen[text][0]


def read_blocks(engine: Any, coverages: list[str], *, dataset: str, entity: str, measures: list[str],
                timeout_s: float) -> Blocks:
    """Run :func:`block_query` on ``engine`` and gather its rows into blocks."""
    sql, layout = _block_query(tuple(coverages), dataset, entity, tuple(measures), engine.dialect)
    result = engine.execute(sql, timeout_s=timeout_s, max_rows=MOST_BLOCK_ENTITIES)
    if result.truncated:
        raise DsbrokerError(f"what has been released of {dataset} is too fine to audit within the sandbox's "
                            "memory; the owner can narrow the auditor's scope", reason="AUDIT_TOO_LARGE",
                            table=dataset)
    width = layout.width
    index_of: dict[tuple, int] = {}
    signatures: list[tuple] = []
    contributions: list[dict[Any, Contribution]] = []
    # An audit of a large release reads a row per block and entity: one pass, no per-row generators.
    entity_at, rows_at = width, width + 1
    sums_of = _picker([width + 2 + 2 * i for i in range(len(measures))])
    counts_of = _picker([width + 3 + 2 * i for i in range(len(measures))])  # COUNT is never NULL
    for row in result.rows:
        flat = row[:width]
        block = index_of.get(flat)
        if block is None:
            block = index_of[flat] = len(signatures)
            signatures.append(layout.signature(flat))
            contributions.append({})
        # One row per block and entity (the query groups by both).
        contributions[block][row[entity_at]] = (row[rows_at], sums_of(row), counts_of(row))
    return Blocks(signatures, contributions, tuple(measures))


def _picker(positions: list[int]):
    """A function of a row: the tuple of its values at ``positions``."""
    if not positions:
        return lambda row: ()
    if len(positions) == 1:
        at = positions[0]
        return lambda row: (row[at],)
    return operator.itemgetter(*positions)


@functools.lru_cache(maxsize=64)
def _block_query(coverages: tuple[str, ...], dataset: str, entity: str, measures: tuple[str, ...],
                 dialect: str) -> tuple[str, BlockLayout]:
    # Built once per set of coverages: an audit with nothing new released since reuses the last one's.
    return block_query(list(coverages), dataset=dataset, entity=entity, measures=list(measures), dialect=dialect)


@functools.lru_cache(maxsize=4096)
def _qualified(sql: str, table: str, dialect: str) -> exp.Select:
    """The coverage ``sql`` parsed, with every unqualified column naming the dataset's table (the joins of other
    coverages would make a bare name ambiguous). Cached: callers must not change the tree."""
    select = sqlglot.parse_one(sql, read=dialect)
    for column in select.find_all(exp.Column):
        if not column.table:
            column.set("table", exp.to_identifier(table))
    return select
