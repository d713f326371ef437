"""The witness ledger's entries as an auditor reads them: checkpoints a sandbox countersigned, and forks it refused.

The sandbox writes the ledger (sandbox.ledgers.checkpoint_witness); ``dsbroker audit reconcile`` reads a copy
of it read-only, without the sandbox's code, and checks its chain.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dsbroker.database import open_sqlite_read_only
from dsbroker.records.chain import chain_problems, entry_digest, read_entries
from dsbroker.records.checkpoints import Countersignature

WITNESSED_MARK = "witnessed"
WITNESSED, FORK = "witnessed", "fork"


class WitnessTableMissing(Exception):
    """The ledger has no witness table: written by an older dsbroker, or the table was dropped."""


@dataclass(frozen=True)
class Witnessed:
    """One entry of the witness ledger: a checkpoint witnessed, or a fork refused (an alarm)."""

    seq: int
    at: str
    kind: str
    size: int
    root: str
    checkpoint_hash: str
    checkpoint: str  # the checkpoint's canonical JSON, as the broker signed it
    countersignature: str  # the Countersignature's canonical JSON; empty for a fork
    prev_hash: str
    hash: str = ""

    def signed(self) -> Countersignature | None:
        """The countersignature this entry holds (None for a fork)."""
        return Countersignature(**json.loads(self.countersignature)) if self.countersignature else None


def entry_hash(entry: Witnessed) -> str:
    """SHA-256 over every field but the hash."""
    return entry_digest(entry)


def read_witnessed(path: str | Path) -> list[Witnessed]:
    """Every entry of the witness ledger in ``path``, oldest first, read without changing the file;
    raises WitnessTableMissing when the file has no witness table, LedgerUnreadable when its columns are
    not an entry's."""
    with closing(open_sqlite_read_only(path)) as db:
        if not db.execute("PRAGMA table_info(witnessed_checkpoints)").fetchall():
            raise WitnessTableMissing(str(path))
        return read_entries(db, "witnessed_checkpoints", Witnessed)


def witness_marked(path: str | Path) -> bool:
    """Whether the ledger in ``path`` is marked as having witnessed (read without changing the file)."""
    with closing(open_sqlite_read_only(path)) as db:
        try:
            return db.execute("SELECT 1 FROM ledger_marks WHERE name = ?", (WITNESSED_MARK,)).fetchone() is not None
        except sqlite3.OperationalError:
            return False  # a ledger from before the mark, or one that never witnessed


def verify_witnessed(entries: Sequence[Witnessed]) -> list[str]:
    """Problems with the witness ledger's own chain, first bad entry first."""
    return chain_problems(entries, entry_hash, "witness entry")
