"""What every hash-chained ledger of dsbroker shares: an entry's hash over its other fields, and the problems
of a chain read back (a missing entry, one that does not follow the one before, one altered)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any, Callable, Protocol, Sequence

from dsbroker.records.access_record import GENESIS_HASH, canonical_json


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
