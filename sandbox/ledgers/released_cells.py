"""The released-cell ledger: every exact cell that has left the sandbox, by what it covers.

Kept on the owner's side, per scope (the dataset: its taxpayers, across every grant and department,
since released reports are shared), for the auditor (``sandbox.audit``). A cell is recorded by its
query's *coverage* (the SQL of its rows: table, lookups, WHERE with the row filter; and its group
keys), which keys of the coverage it fixes (all, a ROLLUP total's leading ones, or a CUBE's; see
:func:`fixed_code`), their values, and
which of its statistics were released, and under which cell rules (the threshold and dominance rule of
each grant it was released to: what a laxer grant received is no "known before" to a stricter one). Cells
are written before their answer leaves, flushed to disk
(``POWER_CUT``): a released cell the ledger lost would let the next query difference against it
unaudited. Each cell keeps the value released, so that a cell whose data has changed since (a late
declaration, an amendment) is told from one that has not. Recording the same cell again changes nothing
(the first value released stays).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import decimal
import json
import uuid
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from dsbroker.database import Durability, open_sqlite
from dsbroker.errors import ExecutionLedgerError
from dsbroker.private_files import create_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS coverages (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    coverage TEXT NOT NULL,
    UNIQUE (scope, coverage)
);
CREATE TABLE IF NOT EXISTS cells (
    coverage INTEGER NOT NULL REFERENCES coverages (id),
    fixed INTEGER NOT NULL,
    keys TEXT NOT NULL,
    statistic TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (coverage, fixed, keys, statistic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS releases (
    coverage INTEGER NOT NULL REFERENCES coverages (id),
    fixed INTEGER NOT NULL,
    keys TEXT NOT NULL,
    statistic TEXT NOT NULL,
    rules TEXT NOT NULL,
    PRIMARY KEY (coverage, fixed, keys, statistic, rules)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS releases_no_delete BEFORE DELETE ON releases
BEGIN SELECT RAISE(ABORT, 'the released-cell ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS releases_no_update BEFORE UPDATE ON releases
BEGIN SELECT RAISE(ABORT, 'the released-cell ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS cells_no_delete BEFORE DELETE ON cells
BEGIN SELECT RAISE(ABORT, 'the released-cell ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS cells_no_update BEFORE UPDATE ON cells
BEGIN SELECT RAISE(ABORT, 'the released-cell ledger is append-only'); END;
"""


def fixed_code(positions: tuple[int, ...]) -> int:
    """How a cell that fixes the keys at ``positions`` (in order) of its coverage says so in the ledger: the
    count of them where they are the leading ones (every cell of a plain GROUP BY, a ROLLUP total), else the
    negated bitmask of the positions (a CUBE's or a grouping set's total over a key before one it fixes)."""
    if positions == tuple(range(len(positions))):
        return len(positions)
    return -sum(1 << p for p in positions)


def fixed_positions(code: int) -> tuple[int, ...]:
    """The positions of the keys a cell fixes, from its :func:`fixed_code`."""
    if code >= 0:
        return tuple(range(code))
    mask = -code
    return tuple(p for p in range(mask.bit_length()) if mask >> p & 1)


@dataclass(frozen=True)
class ReleasedCell:
    """One released statistic of one cell: its coverage, which of its keys it fixes (:func:`fixed_code`: the
    leading ones, fewer for a ROLLUP total, or any for a CUBE's), their values, the statistic (``rows``,
    ``entities``, ``sum:<measure>``, ``count:<measure>``), its value as released and the cell rules it was
    released under (opaque text, one per set of rules; a cell recorded before rules were kept has none)."""

    coverage: str
    fixed: int
    keys: tuple
    statistic: str
    value: Any = None  # what was released, to tell a cell whose data changed since (a late declaration)
    rules: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple:
        """(coverage, keys fixed, keys, statistic): what identifies the cell's statistic in the ledger."""
        return (self.coverage, self.fixed, self.keys, self.statistic)


class ReleasedCellLedger:
    """The cells released per scope, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_sqlite(self.path, durability=Durability.POWER_CUT, autocommit=True)
        self._db.executescript(_SCHEMA)
        self._cells: dict[str, dict[tuple, ReleasedCell]] = {}  # per scope, what the file holds
        self._rule_sets: dict[frozenset[str], frozenset[str]] = {}  # each distinct set of rules, once
        self._version: int | None = None
        self._lock_file = create_private(self.path.with_name(self.path.name + ".lock"))

    def cells(self, scope: str) -> list[ReleasedCell]:
        """Every cell released in ``scope``, oldest coverage first."""
        return list(self.held(scope).values())

    def held(self, scope: str) -> Mapping[tuple, ReleasedCell]:
        """Every cell released in ``scope`` by (coverage, keys fixed, keys, statistic), read from the file once
        and then kept while no other connection writes the file. A read-only view: the auditor reads it under
        its lock, without copying the ledger on every answer."""
        with self._lock:
            # Another sandbox writing the same file (replicas over one data file) changes SQLite's data_version
            # for this connection: what is kept is then read again.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._cells.clear()
                self._version = version
            cached = self._cells.get(scope)
            if cached is not None:
                return MappingProxyType(cached)
            # Each cell with the rules it was released under (a JSON array, empty for a cell recorded before rules
            # were kept), read row by row: the ledger is held in memory, so each coverage's text and each set of
            # rules is held once, not once per cell.
            rows = self._db.execute(
                "SELECT c.coverage, x.fixed, x.keys, x.statistic, x.value, (SELECT json_group_array(r.rules) "
                "FROM releases r WHERE r.coverage = x.coverage AND r.fixed = x.fixed AND r.keys = x.keys "
                "AND r.statistic = x.statistic) FROM cells x JOIN coverages c ON c.id = x.coverage "
                "WHERE c.scope = ? ORDER BY c.id, x.fixed, x.keys, x.statistic", (scope,))
            read: dict[str, frozenset[str]] = {}  # the few texts of sets of rules, each read once
            texts: dict[str, str] = {}
            found = {}
            for coverage, fixed, keys, statistic, value, rules in rows:
                if rules not in read:
                    read[rules] = self._interned(json.loads(rules))
                cell = ReleasedCell(texts.setdefault(coverage, coverage), fixed, decode_keys(keys), statistic,
                                    decode_keys(value)[0], read[rules])
                found[cell.key] = cell
            self._cells[scope] = found
            return MappingProxyType(found)

    def record(self, scope: str, cells: list[ReleasedCell]) -> None:
        """Write ``cells`` durably before they are released; raises ExecutionLedgerError (UNAVAILABLE) if it
        cannot, and then nothing is released."""
        with self._lock:
            cached = self._cells.get(scope)
            if cached is not None and self._db.execute("PRAGMA data_version").fetchone()[0] == self._version:
                # A cell recorded already keeps its first value: an answer that repeats cells under rules they
                # were released under before writes nothing (no flush to disk on every repeated query).
                cells = [c for c in cells if c.key not in cached or not c.rules <= cached[c.key].rules]
        if not cells:
            return
        try:  # encoded before the transaction: a value that cannot be recorded leaves no write open
            encoded = [(c, encode_keys(c.keys), encode_keys((c.value,))) for c in cells]
        except TypeError as error:
            raise ExecutionLedgerError(f"the sandbox cannot record a cell of this answer ({error}); nothing was "
                                       "released", reason="RELEASED_CELLS_UNAVAILABLE") from None
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                ids: dict[str, int] = {}
                for cell in cells:
                    if cell.coverage not in ids:
                        self._db.execute("INSERT OR IGNORE INTO coverages (scope, coverage) VALUES (?, ?)",
                                         (scope, cell.coverage))
                        ids[cell.coverage] = self._db.execute(
                            "SELECT id FROM coverages WHERE scope = ? AND coverage = ?",
                            (scope, cell.coverage)).fetchone()[0]
                self._db.executemany(
                    "INSERT OR IGNORE INTO cells (coverage, fixed, keys, statistic, value) VALUES (?, ?, ?, ?, ?)",
                    [(ids[c.coverage], c.fixed, keys, c.statistic, value) for c, keys, value in encoded])
                self._db.executemany(
                    "INSERT OR IGNORE INTO releases (coverage, fixed, keys, statistic, rules) VALUES (?, ?, ?, ?, ?)",
                    [(ids[c.coverage], c.fixed, keys, c.statistic, rules) for c, keys, _ in encoded
                     for rules in sorted(c.rules)])
                self._db.execute("COMMIT")
                cached = self._cells.get(scope)
                if cached is not None:
                    for cell in cells:  # INSERT OR IGNORE: the first value released stays; the rules add up
                        before = cached.get(cell.key)
                        cached[cell.key] = dataclasses.replace(cell, rules=self._interned(cell.rules)) \
                            if before is None else dataclasses.replace(
                                before, rules=self._interned(before.rules | cell.rules))
            except Exception as error:  # noqa: BLE001 - whatever failed, the write must not stay open
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._cells.pop(scope, None)
                raise ExecutionLedgerError(f"the sandbox could not record the released cells "
                                           f"({type(error).__name__}); nothing was released",
                                           reason="RELEASED_CELLS_UNAVAILABLE") from None

    def _interned(self, rules: Iterable[str]) -> frozenset[str]:
        """One object per distinct set of rules: cells are many, sets of rules few (one per grant's rules), and the
        ledger is kept in memory."""
        key = frozenset(rules)
        return self._rule_sets.setdefault(key, key)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the ledger against every other process that audits with it (one audit and its record at a
        time across sandboxes sharing the file: two answers audited at once could each pass alone)."""
        with open(self._lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


# Made once: json.dumps with arguments builds an encoder per call, which a 4096-cell answer pays 8192 times.
_KEYS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_keys(values: tuple) -> str:
    """Key values as JSON text that :func:`decode_keys` reads back to equal values of the same types."""
    return _KEYS_ENCODER.encode([_encode(v) for v in values])


def decode_keys(text: str) -> tuple:
    """The key values :func:`encode_keys` wrote."""
    return tuple(_decode(v) for v in json.loads(text))


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, dt.datetime):
        return ["t", value.isoformat()]
    if isinstance(value, dt.date):
        return ["d", value.isoformat()]
    if isinstance(value, decimal.Decimal):
        return ["n", str(value)]
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, dt.time):
        return ["h", value.isoformat()]
    if isinstance(value, dt.timedelta):
        return ["v", [value.days, value.seconds, value.microseconds]]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["b", bytes(value).hex()]
    raise TypeError(f"a group key of type {type(value).__name__} cannot be recorded")


def _decode(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    kind, text = value
    if kind == "v":
        return dt.timedelta(days=text[0], seconds=text[1], microseconds=text[2])
    return {"i": int, "t": dt.datetime.fromisoformat, "d": dt.date.fromisoformat, "n": decimal.Decimal,
            "f": float, "h": dt.time.fromisoformat, "u": uuid.UUID, "b": bytes.fromhex}[kind](text)
