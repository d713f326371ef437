"""What leaves the sandbox of an encrypted result: group keys in clear, one BFV ciphertext per measure.

Every cell carries its count of entities; groups under the threshold are left out here altogether, so
not even the broker learns which groups were small. Each measure must be an exact
integer that cannot wrap around the plaintext modulus, not even once the broker has added every
partition's cell to it: a cell beyond ``EXACT_LIMIT / partitions`` is refused, never wrapped.

Without partitions the cells are encrypted at once, slot i holding group row i. With partitions the
sandbox first returns only its groups, keeps its cells for a moment (:class:`PendingPartitions`), and
encrypts them when the broker sends the union of every partition's groups, so that slot i of every
partition's ciphertext is the same group and the broker can add them.
"""

from __future__ import annotations

import operator
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import tenseal as ts

from dsbroker.errors import DsbrokerError
from dsbroker.guard import GuardedQuery
from dsbroker.guard.release_plan import Average
from dsbroker.results.parameters import EXACT_LIMIT, SLOTS
from sandbox.audit.auditor import AnswerCell, Audit, statistics_read
from sandbox.disclosure.evaluate import direct_position, wire_value
from sandbox.disclosure.release import compile_plan, layout_of, output_types
from dsbroker.results.table import encode_table, wire_keys
from dsbroker.v1 import results_pb2 as pb

PENDING_SECONDS = 60.0


@dataclass(frozen=True)
class Measure:
    """One encrypted output: its exact cells per released group (an average: its sums and counts)."""

    name: str
    position: int
    kind: int  # pb.ENCRYPTED_COLUMN_KIND_TOTAL or _AVERAGE
    values: tuple[int, ...]
    counts: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EncryptedRelease:
    """The groups a result releases, in clear, and the exact cells to encrypt for them."""

    groups: pb.ResultTable  # the released groups' keys, in engine order
    keys: tuple[tuple, ...]  # the same keys as their wire values (see result_table.wire_keys)
    withheld: frozenset[tuple]  # keys of groups under the threshold (they never leave the sandbox)
    measures: tuple[Measure, ...]
    truncated: bool = False  # more groups were released than the row cap holds


def encrypted_release(names: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery, *,
                      partitions: int, dataset: str, max_rows: int | None = None,
                      audit: Audit | None = None) -> EncryptedRelease:
    """Split the engine's cell table for ``guarded`` into released groups and exact integer cells.

    An output is a group key (sent in clear) or one aggregate (``reject_encryption_unsupported``); an
    AVG travels as its SUM and COUNT. The engine returns the released groups first (``split_cells``), so
    the first ``max_rows`` released groups, and whether there were more, depend on released groups alone.
    ``audit`` (``sandbox.audit``) is asked about the groups the threshold releases; a group it withholds
    anything of is left out like a small one (an encrypted cell cannot be marked).
    Raises OUT_OF_RANGE ``ENCRYPTED_OVERFLOW`` when a cell could exceed
    what decrypts exactly once ``partitions`` cells are added, and ``ENCRYPTED_NOT_INTEGER`` for an
    output that is not a whole number by its type (a DOUBLE or DECIMAL measure, a fraction of one).
    """
    plan = guarded.cells
    layout = layout_of(names, types, plan)
    program = compile_plan(plan, layout)
    out_types = output_types(plan, layout, program)
    key_positions = [i for i, output in enumerate(plan.outputs) if not output.cell]
    measures_at = [i for i, output in enumerate(plan.outputs) if output.cell]
    integer_parts = {i: _integer_parts(plan.outputs[i], program.outputs[i], layout, program.kinds[i], dataset)
                     for i in measures_at}
    limit = EXACT_LIMIT // partitions
    entities_at = layout.columns.statistics[0]
    released, withheld = [], []
    for row in rows:
        # A group whose sum some but fewer than k entities make up is left out whole: an encrypted cell
        # cannot be marked.
        small = ((row[entities_at] or 0) < guarded.min_entities
                 or layout.hidden_by_contributors(row, guarded.min_entities))
        (withheld if small else released).append(row)
    if audit is not None and released:
        read = statistics_read(plan)
        positions = layout.columns.statistics
        cells = [AnswerCell(index, plan.keys, tuple(row[p] for p in layout.columns.keys),
                            frozenset(statistics := [i for i in read if row[positions[i]] is not None]),
                            tuple((i, row[positions[i]]) for i in sorted(statistics)))
                 for index, row in enumerate(released)]
        audited = audit([cell for cell in cells if cell.statistics])
        withheld.extend(row for index, row in enumerate(released) if index in audited)
        kept = [index for index in range(len(released)) if index not in audited]
        released = [released[index] for index in kept]
        cap_now = guarded.max_rows if max_rows is None else max_rows
        audit.commit(set(kept[:cap_now]))  # the groups that leave: the first the cap holds
    if guarded.suppression != "mark":
        # Under suppressed: drop a small cell's existence is not told, not even as a count of partitions.
        withheld = []
    cap = guarded.max_rows if max_rows is None else max_rows
    truncated = len(released) > cap
    released = released[:cap]
    key_names = [plan.outputs[p].name for p in key_positions]
    key_types = [out_types[p] for p in key_positions]
    readers = [_reader(plan.outputs[p].node, layout, program.outputs[p], program.kinds[p]) for p in key_positions]

    def keys_of(group: list) -> pb.ResultTable:
        if len(readers) == 1:
            (read,) = readers
            return encode_table(key_names, key_types, [(read(row),) for row in group])
        return encode_table(key_names, key_types, [tuple(read(row) for read in readers) for row in group])

    groups, withheld_groups = keys_of(released), keys_of(withheld)
    measures = []
    for position in measures_at:
        name = plan.outputs[position].name
        total, count = integer_parts[position]
        values = _cells(map(total, released), limit, name, dataset)
        counts = _cells(map(count, released), limit, name, dataset) if count is not None else None
        kind = pb.ENCRYPTED_COLUMN_KIND_AVERAGE if counts is not None else pb.ENCRYPTED_COLUMN_KIND_TOTAL
        measures.append(Measure(name, position, kind, values, counts))
    return EncryptedRelease(groups, wire_keys(groups), frozenset(wire_keys(withheld_groups)), tuple(measures),
                            truncated)


def _integer_parts(output, compiled, layout, kind: str, dataset: str):
    """Functions of a released row giving the output's exact integer (an average: its sum and its count)."""
    node = output.node
    if isinstance(node, Average):
        if node.coefficient.denominator != 1 or layout.columns.stat_kinds[node.total] != "int":
            _not_integer(output.name, dataset)
        factor = int(node.coefficient)
        total, count = layout.columns.statistics[node.total], layout.columns.statistics[node.count]
        return (lambda row: None if row[total] is None else factor * int(row[total]), lambda row: row[count])
    if kind != "int":
        _not_integer(output.name, dataset)
    return _reader(node, layout, compiled, kind), None


def _reader(node, layout, compiled, kind: str):
    """A function of a released row giving the output's wire value: the column itself where it is one."""
    position = direct_position(node, layout.columns)
    if position is not None:
        return operator.itemgetter(position)
    return lambda row: wire_value(compiled(row), kind)


def _not_integer(name: str, dataset: str) -> None:
    raise DsbrokerError(f"{name!r} is not a whole number, so it cannot be encrypted exactly; ask for integer "
                        "measures (e.g. fen, not yuan)", reason="ENCRYPTED_NOT_INTEGER",
                        table=dataset, column=name)


def noisy_release(table: pb.ResultTable, keys: set[int], *, dataset: str) -> EncryptedRelease:
    """The release of a noisy answer (every cell already past the noisy threshold): columns at ``keys``
    are group keys, the others whole-number noisy counts and sums."""
    groups = pb.ResultTable(row_count=table.row_count)
    measures = []
    for position, column in enumerate(table.columns):
        if position in keys:
            groups.columns.add().CopyFrom(column)
            continue
        if column.type != pb.COLUMN_TYPE_INTEGER:
            raise DsbrokerError(f"{column.name!r} is not a whole number, so it cannot be encrypted exactly",
                                reason="ENCRYPTED_NOT_INTEGER", table=dataset, column=column.name)
        values = _cells(column.int_values, EXACT_LIMIT, column.name, dataset)
        measures.append(Measure(column.name, position, pb.ENCRYPTED_COLUMN_KIND_TOTAL, values))
    return EncryptedRelease(groups, wire_keys(groups), frozenset(), tuple(measures))


def encrypt(release: EncryptedRelease, context: ts.Context, key_id: str, *,
            domain: tuple[tuple, ...] | None = None) -> pb.EncryptedTable:
    """Encrypt ``release`` under ``context``: over its own groups, or over ``domain`` (the union of every
    partition's groups, each group of this partition in it) with a count of the groups withheld here."""
    if domain is None:
        order, groups = list(range(len(release.keys))), release.groups
        table = pb.EncryptedTable(groups=groups, key_id=key_id, partitions=1)
    else:
        index = {key: i for i, key in enumerate(release.keys)}
        order = [index.get(key) for key in domain]
        table = pb.EncryptedTable(key_id=key_id, partitions=1)
        if domain:
            withheld = [int(key in release.withheld) for key in domain]
            table.partitions_withheld = ts.bfv_vector(context, withheld).serialize()
    for measure in release.measures:
        column = table.columns.add(name=measure.name, position=measure.position, kind=measure.kind)
        if order:
            column.ciphertext = _encrypt(context, measure.values, order)
            if measure.counts is not None:
                column.count_ciphertext = _encrypt(context, measure.counts, order)
    return table


def _encrypt(context: ts.Context, values: tuple[int, ...], order: list[int | None]) -> bytes:
    return ts.bfv_vector(context, [0 if i is None else values[i] for i in order]).serialize()


def _cells(values, limit: int, name: str, dataset: str) -> tuple[int, ...]:
    cells = tuple(0 if value is None else int(value) for value in values)
    if cells and (max(cells) > limit or -min(cells) > limit):
        # The message names the column and the limit, never the cell.
        raise DsbrokerError(f"a cell of {name!r} is beyond what an encrypted result holds exactly (±{limit:,} per "
                            "partition); group more finely or ask for a coarser unit", reason="ENCRYPTED_OVERFLOW",
                            table=dataset, column=name)
    return cells


def check_domain(release: EncryptedRelease, groups: pb.ResultTable) -> tuple[tuple, ...]:
    """The broker's union of groups as keys; INVALID_ARGUMENT unless it is of this result's key columns,
    within the slots, without repeats, and holds every group this partition released."""
    def refuse(message: str):
        return DsbrokerError(message, reason="PARTITION_GROUPS_INVALID")

    mine = [(c.name, c.type) for c in release.groups.columns]
    if [(c.name, c.type) for c in groups.columns] != mine:
        raise refuse("the groups are not of this result's key columns")
    if groups.row_count > SLOTS:
        raise refuse(f"more than {SLOTS} groups do not fit one ciphertext")
    try:
        domain = wire_keys(groups)
    except ValueError:
        raise refuse("the groups' columns are not all of row_count cells") from None
    if len(set(domain)) != len(domain):
        raise refuse("the groups repeat a key")
    if not set(release.keys) <= set(domain):
        raise refuse("the groups leave out a group this partition released")
    return domain


@dataclass(frozen=True)
class Pending:
    """A partition's cells of one execution, waiting for the union of groups."""

    release: EncryptedRelease
    context: ts.Context
    key_id: str
    expires: float


class PendingPartitions:
    """Cells kept between the two rounds of a secure sum: each taken once, and gone after ``ttl`` seconds."""

    def __init__(self, *, ttl: float = PENDING_SECONDS, capacity: int = 256) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, execution_id: str, release: EncryptedRelease, context: ts.Context, key_id: str) -> None:
        """Keep ``release`` for the second round of execution ``execution_id``."""
        with self._lock:
            self._expire()
            self._pending[execution_id] = Pending(release, context, key_id, time.monotonic() + self.ttl)
            while len(self._pending) > self.capacity:
                self._pending.popitem(last=False)

    def take(self, execution_id: str) -> Pending:
        """The cells of ``execution_id``, removed; NOT_FOUND when unknown, expired or taken already."""
        with self._lock:
            self._expire()
            pending = self._pending.pop(execution_id, None)
        if pending is None:
            raise DsbrokerError("no cells wait for this execution here: it ran elsewhere, was encrypted already, or "
                                f"waited over {self.ttl:.0f} s", reason="PARTITION_EXECUTION_UNKNOWN")
        return pending

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending and next(iter(self._pending.values())).expires <= now:
            self._pending.popitem(last=False)
