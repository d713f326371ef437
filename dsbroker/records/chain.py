"""What every hash-chained ledger of dsbroker shares: an entry's hash over its other fields, and the problems
of a chain read back (a missing entry, one that does not follow the one before, one altered)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
import sqlite3
from dataclasses import fields
from typing import Any, Callable, Protocol, Sequence, TypeVar

from dsbroker.records.access_record import GENESIS_HASH, canonical_json

E = TypeVar("E")


class LedgerUnreadable(Exception):
    """A ledger's table is missing, or its columns are not an entry's (an edit)."""


class ChainEntry(Protocol):
    """An entry of a hash-chained ledger: its position, the hash of the one before, its own hash."""

    @property
    def seq(self) -> int: ...

    @property
    def prev_hash(self) -> str: ...

    @property
    def hash(self) -> str: ...


def entry_digest(entry: Any) -> str:
    """SHA-256 over the canonical JSON of every field of the dataclass ``entry`` but its hash."""
    return hashlib.sha256(canonical_json({k: v for k, v in asdict(entry).items() if k != "hash"}).encode()).hexdigest()


def chain_problems(entries: Sequence[ChainEntry], digest: Callable[[Any], str], what: str) -> list[str]:
    """Problems with a chain of ``entries`` (oldest first), first bad entry first; ``what`` names an entry."""
    problems: list[str] = []
    expected, prev = 1, GENESIS_HASH
    for entry in entries:
        if entry.seq != expected:
            problems.append(f"{what} {expected}: entries {expected}..{entry.seq - 1} are missing")
        if entry.prev_hash != prev:
            problems.append(f"{what} {entry.seq}: does not follow the entry before it")
        if digest(entry) != entry.hash:
            problems.append(f"{what} {entry.seq}: contents do not match its hash (altered)")
        expected, prev = entry.seq + 1, entry.hash
    return problems


def read_entries(db: sqlite3.Connection, table: str, entry: type[E]) -> list[E]:
    """Every row of ``table`` as an ``entry`` (a dataclass whose fields are the columns), oldest first;
    LedgerUnreadable when the table is missing or its columns are not the entry's fields."""
    wanted = [f.name for f in fields(entry)]  # type: ignore[arg-type]
    found = [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()]
    if not found:
        raise LedgerUnreadable(f"the ledger has no {table} table (dropped, or not a ledger)")
    if set(found) != set(wanted):
        odd = sorted(set(found) ^ set(wanted))
        raise LedgerUnreadable(f"the {table} table's columns are not a ledger's ({', '.join(odd)}): edited")
    return [entry(*row) for row in db.execute(f"SELECT {', '.join(wanted)} FROM {table} ORDER BY seq").fetchall()]
