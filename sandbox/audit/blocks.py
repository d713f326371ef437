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

import collections
import functools
import hashlib
import operator
import threading
from dataclasses import dataclass
from typing import Any

import sqlglot
import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect

from dsbroker.errors import DsbrokerError
from dsbroker.guard import internal_names as names
from sandbox.audit.components import lookup_names

# The most (block, entity) pairs one audit reads from the engine. A larger answer would cost the sandbox
# more memory than any answer is worth, so the query is refused rather than released unaudited.
MOST_BLOCK_ENTITIES = 2_000_000
# The most (block, entity) pairs kept across audits (BlockCache), all entries together. Measured (tracemalloc, Python
# 3.11) at 500,000: 140 MB as 5,000 blocks of 100 taxpayers with one measure, 220 MB with five; 300-380 MB as 500,000
# blocks of one taxpayer each. A department's queries can fill it, held between audits, so it is kept to a fifth of
# that (under 80 MB): a district's month of blocks is a few thousand pairs.
KEPT_BLOCK_ENTITIES = 100_000
# Above this many distinct conditions the block query evaluates the conditions once per distinct combination of the
# values they read, not on every row (see block_query). Measured on the bench's 1.15M rows, coverages of a district's
# months: even at 8 to 16, faster from 32 (0.25 s against 0.30 s; 0.41 s against 3.1 s at 600). Up to it the direct
# query stays: its bare WHERE lets DuckDB prune row groups, and it joins nothing.
DIRECT_CONDITIONS = 32
# The most signature values (distinct combinations x signature columns) the combinations' query evaluates. Measured
# (DuckDB, 2 cores): 20,000,000 take about a second. Past it the audit is refused (AUDIT_TOO_LARGE): coverages over
# a column of many values (a range on a measure) would otherwise bring the cost back to rows x conditions.
MOST_SIGNATURE_VALUES = 20_000_000
# The most distinct conditions and keys one audit evaluates: the engine plans each (DuckDB: 6,000 conditions in about
# a second), however few the rows, and a key is evaluated on every row. Past it the audit is refused
# (AUDIT_TOO_LARGE), so the answer that would add one more is never released: the ledger's part stops growing there.
MOST_CONDITIONS_AND_KEYS = 10_000
# The most terms of the WHERE that the combinations' query reads rows by (see _wider); past it, every row.
WIDER_TERMS = 64


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
    condition among the query's distinct conditions and the indexes of its keys among its distinct keys.
    ``most_values`` is set where the query reads the signatures of the distinct combinations of values: the most
    combinations it evaluates, and each row's last column says how many it found (up to one more)."""

    conditions: int
    keys: int
    coverages: tuple[tuple[int, tuple[int, ...]], ...]
    most_values: int | None = None

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
                dialect: str, by_values: bool | None = None, bounded: bool = True) -> tuple[str, BlockLayout]:
    """The engine query that groups the rows of ``coverages`` by signature and entity (see the module), and
    how to read each coverage's cell from its rows.

    Coverages share conditions (a month's street table and its street x industry table read the same rows)
    and keys, so the query has one column per distinct condition (whether a row meets it) and one per
    distinct key, shown only where a condition of a coverage with that key holds. Each coverage's cell
    follows exactly (its condition, and its keys where it holds), so the blocks are the same as with a
    condition and keys per coverage, with far fewer columns for the engine to group by.

    Over more than :data:`DIRECT_CONDITIONS` distinct conditions (or with ``by_values``) the conditions are
    evaluated once per distinct combination of the values they read, not on every row (see
    :func:`_by_values_query`): anyone may add conditions cheaply (each spelling of a WHERE is one), and evaluating
    each on every row made every later audit of the dataset slow. What grows still is refused (AUDIT_TOO_LARGE)
    past :data:`MOST_CONDITIONS_AND_KEYS` and :data:`MOST_SIGNATURE_VALUES`, unless not ``bounded`` (the owner's
    summary of a whole ledger, which answers no one waiting)."""
    table = dataset.split(".")[1]
    joins: dict[str, str] = {}  # lookup -> its LEFT JOIN
    conditions: dict[str, tuple[int, CoverageShape]] = {}  # COALESCE text -> place (first seen first), a shape with it
    keys: dict[str, int] = {}  # key text -> place
    shown_by: dict[str, list[int]] = {}  # key -> the conditions of the coverages whose cells it keys
    reads: dict[str, str] = {}  # the combinations' column -> the column of the dataset (or a lookup) it is
    layout: list[tuple[int, tuple[int, ...]]] = []
    # Assembled from each coverage's texts (cached per coverage): an audit over many coverages builds no tree.
    for sql in coverages:
        shape = _shape(sql, table, dialect)
        for lookup, join in shape.joins:
            joins.setdefault(lookup, join)
        reads.update(shape.reads)
        condition_at = conditions.setdefault(shape.condition, (len(conditions), shape))[0]
        positions = []
        for text in shape.keys:
            positions.append(keys.setdefault(text, len(keys)))
            if condition_at not in shown_by.setdefault(text, []):
                shown_by[text].append(condition_at)
        layout.append((condition_at, tuple(positions)))
    shapes = [shape for _, shape in conditions.values()]
    if bounded and len(conditions) + len(keys) > MOST_CONDITIONS_AND_KEYS:
        raise DsbrokerError(f"more distinct queries have been released of {dataset} than the auditor can audit "
                            "together; the owner can narrow the auditor's scope", reason="AUDIT_TOO_LARGE",
                            table=dataset)
    if by_values is None:
        by_values = len(conditions) > DIRECT_CONDITIONS
    schema, name = dataset.split(".")
    source = exp.table_(name, db=schema).sql(dialect=dialect) + "".join(f" {join}" for join in joins.values())
    entity_column, measure_columns = _columns(table, entity, tuple(measures), dialect)
    aggregates = [f"COUNT(*) AS {names.PREFIX}rows"]
    for position, column in enumerate(measure_columns):
        aggregates.append(f"SUM({column}) AS {names.PREFIX}sum{position}")
        aggregates.append(f"COUNT({column}) AS {names.PREFIX}count{position}")
    if by_values and reads:
        most = max(1, MOST_SIGNATURE_VALUES // (len(conditions) + len(keys))) if bounded else 2 ** 62
        where, kept = _wider(shapes)
        sql = _by_values_query(source, where, reads, [_over_values(shape, kept) for shape in shapes],
                               {text: shown_by[text] for text in keys}, entity_column, aggregates, most, dialect)
        return sql, BlockLayout(len(conditions), len(keys), tuple(layout), most)
    signature = _signature_columns(list(conditions), {text: shown_by[text] for text in keys})
    columns = signature + [f"{entity_column} AS {names.PREFIX}entity"] + aggregates
    # The WHERE keeps a row when some condition is true, which the conditions read bare say as well as their
    # COALESCEs (a NULL is not true either way); bare, the engine can push them into its scan (DuckDB prunes
    # row groups by them, halving the audit's engine time on the bench).
    where = " OR ".join(s.bare for s in shapes)
    group = ", ".join(str(i + 1) for i in range(len(signature) + 1))
    sql = f"SELECT {', '.join(columns)} FROM {source} WHERE {where} GROUP BY {group}"
    return sql, BlockLayout(len(conditions), len(keys), tuple(layout))


def _signature_columns(conditions: list[str], keys: dict[str, list[int]]) -> list[str]:
    """The signature's columns: whether each condition holds, then each key where a condition of a coverage it keys
    holds (``keys``: key -> the places of those conditions)."""
    columns = [f"{inside} AS {names.PREFIX}in{i}" for i, inside in enumerate(conditions)]
    for position, (text, shown_by) in enumerate(keys.items()):
        shown = " OR ".join(conditions[i] for i in shown_by)
        columns.append(f"CASE WHEN {shown} THEN {text} END AS {names.PREFIX}k{position}")
    return columns


def _wider(shapes: list[CoverageShape]) -> tuple[str, str | None]:
    """A WHERE that keeps every row some condition of ``shapes`` keeps, and few more: per condition one of its
    conjuncts, the one most conditions share (the grant's row filter, which the guard writes first), ORed. Empty
    where some condition has none (it keeps every row) or where the conjuncts so chosen are many. With it the
    conjunct, where it is one: every condition has it, and it holds in every row the WHERE keeps."""
    shared = collections.Counter(part for shape in shapes for part in set(shape.conjuncts))
    chosen: dict[str, None] = {}
    for shape in shapes:
        if not shape.conjuncts:
            return "", None
        chosen.setdefault(max(shape.conjuncts, key=lambda part: shared[part]))  # the first of the most shared
    if len(chosen) > WIDER_TERMS:
        return "", None
    return " WHERE " + " OR ".join(chosen), next(iter(chosen)) if len(chosen) == 1 else None


def _over_values(shape: CoverageShape, kept: str | None) -> str:
    """The condition of ``shape`` over the combinations' values, without the conjunct ``kept`` that holds in every
    row they are read from (6,000 conditions that each name the grant's row filter are half as long to plan)."""
    if kept is None or kept not in shape.conjuncts:
        return shape.condition_of_values
    rest = [of_values for part, of_values in zip(shape.conjuncts, shape.conjuncts_of_values, strict=True)
            if part != kept]
    # Each part in parentheses: flatten() takes them off a part that was one (an OR inside the AND).
    return f"COALESCE(({' AND '.join(f'({part})' for part in rest)}), FALSE)" if rest else "TRUE"


def _by_values_query(source: str, where: str, reads: dict[str, str], conditions: list[str],
                     keys: dict[str, list[int]], entity_column: str, aggregates: list[str], most: int,
                     dialect: str) -> str:
    """The block query that evaluates the conditions once per distinct combination of the values they read.

    The combinations (``__values``: of the columns ``reads`` names, in the rows ``where`` keeps (see
    :func:`_wider`), at most ``most`` and one more, so that evaluating them is bounded) are given whether each of
    ``conditions`` holds (one array: a column each would cost the engine's planner more than evaluating them, and
    PostgreSQL takes at most 1,664 columns) and whether each of ``keys`` is shown (a condition of a coverage it keys
    holds); each distinct array gets an id (DENSE_RANK). Each row is matched to its combination, NULL-safely (a NULL
    is a value), and grouped by the id, its keys where shown and its entity, as the direct query groups it. A row
    comes back as (id, keys, entity, its part as the direct query's, the id's array on one row of each id, the
    count of combinations); one row of NULLs and that count where no row meets a condition."""
    p = names.PREFIX
    materialized = " MATERIALIZED" if dialect in ("duckdb", "postgres") else ""  # read more than once: computed once
    values = [f"{column} AS {alias}" for alias, column in reads.items()]
    if dialect == "postgres":
        # PostgreSQL hashes no IS NOT DISTINCT FROM (it would compare each row with every combination): rows are
        # matched on each value's text and whether it is NULL instead. DISTINCT over the value and its text gives
        # each text its combination (1.0 and 1.00 are equal numerics with two texts).
        values += [f"CAST({column} AS TEXT) AS {alias}t" for alias, column in reads.items()]
        match = " AND ".join(f"(CAST({column} AS TEXT) IS NULL) = ({p}ids.{alias}t IS NULL) AND "
                             f"COALESCE(CAST({column} AS TEXT), '') = COALESCE({p}ids.{alias}t, '')"
                             for alias, column in reads.items())
        carried = list(reads) + [f"{alias}t" for alias in reads]
    else:
        match = " AND ".join(exp.NullSafeEQ(this=sqlglot.parse_one(column, read=dialect),
                                            expression=exp.column(alias, table=f"{p}ids")).sql(dialect=dialect)
                             for alias, column in reads.items())
        carried = list(reads)
    shown = [f"{_any(_array([_element(f'{p}in', i, dialect) for i in held], dialect), dialect)} AS {p}s{position}"
             for position, held in enumerate(keys.values())]
    shown_keys = [f"CASE WHEN {p}ids.{p}s{position} THEN {text} END AS {p}k{position}"
                  for position, text in enumerate(keys)]
    key_names = [f"{p}k{position}" for position in range(len(keys))]
    aggregated = [column.rsplit(" AS ", 1)[1] for column in aggregates]
    group = ", ".join(str(i + 1) for i in range(len(keys) + 2))
    return (
        f"WITH {p}values AS{materialized} (SELECT DISTINCT {', '.join(values)} FROM {source}{where} "
        f"LIMIT {most + 1}), "
        f"{p}evaluated AS{materialized} (SELECT {', '.join(carried)}, {_array(conditions, dialect)} AS {p}in "
        f"FROM {p}values), "
        f"{p}ids AS{materialized} (SELECT {', '.join(carried + [f'{p}in'] + shown)}, "
        f"DENSE_RANK() OVER (ORDER BY {p}in) AS {p}id FROM {p}evaluated WHERE {_any(f'{p}in', dialect)}), "
        f"{p}grouped AS (SELECT {p}ids.{p}id AS {p}id, {', '.join(shown_keys + [f'{entity_column} AS {p}entity'])}, "
        f"{', '.join(aggregates)}, ROW_NUMBER() OVER (PARTITION BY {p}ids.{p}id ORDER BY {p}ids.{p}id) AS {p}nth "
        f"FROM {source} JOIN {p}ids ON {match}{where} GROUP BY {group}), "
        f"{p}first AS (SELECT {p}in, {p}id, ROW_NUMBER() OVER (PARTITION BY {p}id ORDER BY {p}id) AS {p}nth "
        f"FROM {p}ids), "
        # The id's conditions on one of its rows only: a row each would be most of what the engine sends.
        f"{p}found AS (SELECT {', '.join([f'{p}grouped.{p}id'] + [f'{p}grouped.{n}' for n in key_names])}, "
        f"{p}grouped.{p}entity AS {p}entity, {', '.join(f'{p}grouped.{a}' for a in aggregated)}, "
        f"CASE WHEN {p}grouped.{p}nth = 1 THEN {p}first.{p}in END AS {p}in "
        f"FROM {p}grouped JOIN {p}first ON {p}first.{p}id = {p}grouped.{p}id AND {p}first.{p}nth = 1), "
        f"{p}size AS (SELECT COUNT(*) AS {p}combinations FROM {p}values) "
        f"SELECT {', '.join([f'{p}id'] + key_names)}, {p}entity, {', '.join(aggregated)}, {p}in, {p}combinations "
        f"FROM {p}size LEFT JOIN {p}found ON 1 = 1")


def _array(items: list[str], dialect: str) -> str:
    """An array of ``items`` as ``dialect`` writes one."""
    listed = ", ".join(items)
    return {"duckdb": f"[{listed}]", "postgres": f"ARRAY[{listed}]"}.get(dialect, f"ARRAY({listed})")


def _element(array: str, at: int, dialect: str) -> str:
    """Item ``at`` (from 0) of ``array``: Spark counts from 0, DuckDB and PostgreSQL from 1."""
    return f"{array}[{at if dialect == 'spark' else at + 1}]"


def _any(array: str, dialect: str) -> str:
    """Whether some item of a boolean ``array`` is true (none is NULL: each condition is COALESCEd)."""
    return {"duckdb": f"list_bool_or({array})", "postgres": f"TRUE = ANY({array})"}.get(
        dialect, f"array_contains({array}, TRUE)")


@functools.lru_cache(maxsize=256)
def _columns(table: str, entity: str, measures: tuple[str, ...], dialect: str) -> tuple[str, tuple[str, ...]]:
    """The entity's and the measures' columns, qualified by the dataset's table, as ``dialect`` writes them."""
    return (exp.column(entity, table=table).sql(dialect=dialect),
            tuple(exp.column(measure, table=table).sql(dialect=dialect) for measure in measures))


@dataclass(frozen=True)
class CoverageShape:
    """What a coverage adds to the block query, as the query reads it: the lookups it joins (each as a LEFT JOIN),
    its condition (its WHERE, and a match in each lookup it joins inner), bare and as ``COALESCE((...), FALSE)``,
    and its keys. Two coverages whose conditions read alike keep the same rows, and a key that reads alike is
    the same value of each row. ``reads`` names each column the condition reads by its name among the combinations
    of values (see :func:`_by_values_query`), which ``condition_of_values`` reads."""

    joins: tuple[tuple[str, str], ...]
    condition: str
    bare: str
    keys: tuple[str, ...]
    reads: tuple[tuple[str, str], ...] = ()
    condition_of_values: str = ""
    conjuncts: tuple[str, ...] = ()  # the parts of the bare condition that each hold where it holds
    conjuncts_of_values: tuple[str, ...] = ()  # the same over the combinations' names


@functools.lru_cache(maxsize=16384)
def _shape(sql: str, table: str, dialect: str) -> CoverageShape:
    """The :class:`CoverageShape` of coverage ``sql`` over the dataset's ``table``."""
    # A tree of its own, changed in place and written without copies: an audit after many coverages were recorded
    # builds every one's shape, and copying trees took most of that time.
    select = _qualified(sql, table, dialect)
    written = _dialect(dialect)  # one instance: naming the dialect makes one for each text written
    joins, matched = [], []
    for join in select.args.get("joins") or []:
        lookup = join.this.alias_or_name
        left = exp.Join(this=join.this, on=join.args["on"], side="LEFT")
        joins.append((lookup, left.sql(dialect=written, copy=False)))
        if join.side.upper() != "LEFT":
            # An inner join keeps only the rows its lookup has a row for.
            key = next(c for c in join.args["on"].find_all(exp.Column) if c.table == lookup)
            matched.append(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())))
    where = select.args.get("where")
    parts = ([where.this] if where is not None else []) + matched
    condition = exp.paren(exp.and_(*parts, copy=False) if parts else exp.true(), copy=False)
    keys = [key for key in (e.unalias() for e in select.expressions) if not isinstance(key, exp.Literal)]
    bare = condition.sql(dialect=written, copy=False)
    conjuncts = _conjuncts(condition, written)
    key_texts = tuple(key.sql(dialect=written, copy=False) for key in keys)
    # The condition over the combinations' names of the columns it reads (see _by_values_query).
    reads: dict[str, str] = {}
    for column in list(condition.find_all(exp.Column)):
        text = column.sql(dialect=written, copy=False)
        # Short names: PostgreSQL cuts identifiers at 63 bytes, which could make two of them one.
        alias = reads.setdefault(text, f"{names.PREFIX}v{hashlib.sha256(text.encode()).hexdigest()[:16]}")
        column.replace(exp.column(alias))
    bare_of_values = condition.sql(dialect=written, copy=False)
    return CoverageShape(tuple(joins), f"COALESCE({bare}, FALSE)", bare, key_texts,
                         tuple((alias, column) for column, alias in reads.items()),
                         f"COALESCE({bare_of_values}, FALSE)", conjuncts, _conjuncts(condition, written))


def _conjuncts(condition: exp.Paren, dialect: Dialect) -> tuple[str, ...]:
    """The texts of the parts of ``condition`` (a parenthesised AND of them, or TRUE: none) that each hold where it
    holds, each as a whole expression (an OR among them needs its parentheses again to be ANDed)."""
    inside = condition.this
    if isinstance(inside, exp.Boolean) and inside.this is True:
        return ()
    parts = inside.flatten() if isinstance(inside, exp.And) else [inside]
    return tuple(part.sql(dialect=dialect, copy=False) for part in parts)


def read_blocks(engine: Any, coverages: list[str], *, dataset: str, entity: str, measures: list[str],
                timeout_s: float, by_values: bool | None = None, bounded: bool = True) -> Blocks:
    """Run :func:`block_query` on ``engine`` and gather its rows into blocks."""
    sql, layout = _block_query(tuple(coverages), dataset, entity, tuple(measures), engine.dialect, by_values,
                               bounded)
    result = engine.execute(sql, timeout_s=timeout_s, max_rows=MOST_BLOCK_ENTITIES)
    if result.truncated:
        raise DsbrokerError(f"what has been released of {dataset} is too fine to audit within the sandbox's "
                            "memory; the owner can narrow the auditor's scope", reason="AUDIT_TOO_LARGE",
                            table=dataset)
    rows = result.rows
    if layout.most_values is None:
        return _gathered(rows, layout.width, layout.signature, measures)
    if rows and rows[0][-1] > layout.most_values:
        raise DsbrokerError(f"what has been released of {dataset} reads too many distinct combinations of values "
                            "to audit within the sandbox's bounds; the owner can narrow the auditor's scope",
                            reason="AUDIT_TOO_LARGE", table=dataset)
    # Rows of (id, keys, entity, its part, the id's conditions on one row of the id, the count of combinations); the
    # row of NULLs of no block has no count of rows (COUNT(*) is never NULL).
    held = {row[0]: tuple(row[-2]) for row in rows if row[-2] is not None}
    found = 1 + layout.keys

    def signature(flat: tuple) -> tuple:
        return layout.signature(held[flat[0]] + flat[1:])

    return _gathered([row for row in rows if row[found + 1] is not None], found, signature, measures)


def _gathered(rows: list[tuple], width: int, signature: Any, measures: list[str]) -> Blocks:
    """The blocks of ``rows``, one per block and entity: the first ``width`` columns tell the block (``signature``
    of them gives its signature), then the entity, its rows and per measure its sum and count of values."""
    index_of: dict[tuple, int] = {}
    signatures: list[tuple] = []
    contributions: list[dict[Any, Contribution]] = []
    # An audit of a large release reads a row per block and entity: one pass, no per-row generators.
    entity_at, rows_at = width, width + 1
    sums_of = _picker([width + 2 + 2 * i for i in range(len(measures))])
    counts_of = _picker([width + 3 + 2 * i for i in range(len(measures))])  # COUNT is never NULL
    for row in rows:
        flat = row[:width]
        block = index_of.get(flat)
        if block is None:
            block = index_of[flat] = len(signatures)
            signatures.append(signature(flat))
            contributions.append({})
        # One row per block and entity (the query groups by both).
        contributions[block][row[entity_at]] = (row[rows_at], sums_of(row), counts_of(row))
    return Blocks(signatures, contributions, tuple(measures))


class BlockCache:
    """The blocks of the last audits, kept for the next ones while the data cannot have changed.

    A district's street table asked after its street x industry table of the same month adds no block: its
    condition reads as the other's and its keys are some of the other's, so each block's cell in it follows
    from the block's cell in the other. An answer asked again (by another department, say) adds nothing
    either. Such an audit takes the blocks read before, without an engine query, when the engine vouches
    that the data is the same as when they were read (:meth:`~sandbox.engine.interface.Engine.data_stamp`:
    a DuckDB file served read-only; PostgreSQL and Spark data can change at any moment and are read afresh
    every time). The blocks so found are the ones the engine would give (up to their order), so no decision
    changes; measures read before and not needed now stay, unread."""

    def __init__(self, entries: int = 4) -> None:
        self._entries: list[_Kept] = []  # the newest last
        self._limit = entries
        self._lock = threading.Lock()

    def read(self, engine: Any, coverages: list[str], *, dataset: str, entity: str, measures: list[str],
             timeout_s: float) -> Blocks:
        """The blocks of ``coverages``: from blocks kept, where they tell them, else :func:`read_blocks`."""
        stamp = engine.data_stamp()
        if stamp is not None:
            with self._lock:
                kept = list(self._entries)
            for entry in reversed(kept):
                found = entry.derive(stamp, coverages, dataset, entity, measures, engine.dialect)
                if found is not None:
                    return found
        blocks = read_blocks(engine, coverages, dataset=dataset, entity=entity, measures=measures,
                             timeout_s=timeout_s)
        size = sum(len(entities) for entities in blocks.contributions)
        if stamp is not None and size <= KEPT_BLOCK_ENTITIES and engine.data_stamp() == stamp:  # unchanged meanwhile
            with self._lock:
                self._entries.append(_Kept(stamp, dataset, entity, tuple(coverages), blocks, size))
                while len(self._entries) > self._limit or sum(e.size for e in self._entries) > KEPT_BLOCK_ENTITIES:
                    del self._entries[0]
        return blocks


@dataclass(frozen=True)
class _Kept:
    """Blocks read for ``coverages`` of ``dataset`` when the data's stamp was ``stamp``."""

    stamp: str
    dataset: str
    entity: str
    coverages: tuple[str, ...]
    blocks: Blocks
    size: int  # (block, entity) pairs

    def derive(self, stamp: str, coverages: list[str], dataset: str, entity: str, measures: list[str],
               dialect: str) -> Blocks | None:
        """The blocks of ``coverages``, if each is one of these or follows from one of these (see
        :class:`BlockCache`); None otherwise."""
        if (stamp, dataset, entity) != (self.stamp, self.dataset, self.entity) or \
                not set(measures) <= set(self.blocks.measures):
            return None
        table = dataset.split(".")[1]
        place = {coverage: at for at, coverage in enumerate(self.coverages)}
        reads: list[tuple[int, tuple[int, ...] | None]] = []  # per coverage: a kept one, and its keys' places
        for coverage in coverages:
            if coverage in place:
                reads.append((place[coverage], None))
                continue
            wanted = _shape(coverage, table, dialect)
            for at, kept in enumerate(self.coverages):
                shape = _shape(kept, table, dialect)
                if shape.condition == wanted.condition and set(wanted.keys) <= set(shape.keys):
                    reads.append((at, tuple(shape.keys.index(key) for key in wanted.keys)))
                    break
            else:
                return None
        signatures = [tuple(cells[at] if keys is None or cells[at] is None else tuple(cells[at][k] for k in keys)
                            for at, keys in reads) for cells in self.blocks.signatures]
        return Blocks(signatures, self.blocks.contributions, self.blocks.measures)


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
                 dialect: str, by_values: bool | None, bounded: bool) -> tuple[str, BlockLayout]:
    # Built once per set of coverages: an audit with nothing new released since reuses the last one's.
    return block_query(list(coverages), dataset=dataset, entity=entity, measures=list(measures), dialect=dialect,
                       by_values=by_values, bounded=bounded)


@functools.cache
def _dialect(name: str) -> Dialect:
    """sqlglot's dialect ``name``, one instance for every text written in it."""
    return Dialect.get_or_raise(name)


def _qualified(sql: str, table: str, dialect: str) -> exp.Select:
    """The coverage ``sql`` parsed, with every unqualified column naming the dataset's table (the joins of other
    coverages would make a bare name ambiguous), and each lookup named by :func:`lookup_names` (two grants' lookups
    of one table name are two lookups, whose columns must not read alike). A new tree each time, the caller's to
    change (its shape is what is cached)."""
    select = sqlglot.parse_one(sql, read=_dialect(dialect))
    # Short aliases: PostgreSQL cuts identifiers at 63 bytes, which could make two of them one.
    lookups = {qualifier: f"{names.PREFIX}l{hashlib.sha256(name.encode()).hexdigest()[:16]}"
               for qualifier, name in lookup_names(select).items()}
    for column in select.find_all(exp.Column):
        if not column.table:
            column.set("table", exp.to_identifier(table))
        elif column.table.lower() in lookups:
            column.set("table", exp.to_identifier(lookups[column.table.lower()]))
    for join in select.args.get("joins") or []:
        join.this.set("alias", exp.TableAlias(this=exp.to_identifier(lookups[join.this.alias_or_name.lower()])))
    return select
