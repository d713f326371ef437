"""The sandbox's own record of what the owner has said about its policies: revocations, and the newest
version of each policy it has seen.

The broker may be hostile: it could stop passing a revocation on, or send a plan under an old
version of a policy once a newer one is in force. So whatever reaches the sandbox and verifies
against the owner's trust file (a revocation, a signed policy document) is written here, kept across
restarts, and never taken back: the file is append-only (triggers refuse UPDATE and DELETE), like the
execution ledger. Lookups are served from memory; only something new is written. If it cannot be
written the plan is refused (UNAVAILABLE), so nothing the owner said is forgotten silently.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

from dsbroker.database import Durability, open_sqlite
from dsbroker.errors import PolicyLedgerError
from dsbroker.policy.statements import Revocation, parse_statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS statements (
    seq INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    policy_id TEXT NOT NULL,
    statement TEXT NOT NULL,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY,
    policy_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (policy_id, version)
);
CREATE TRIGGER IF NOT EXISTS statements_no_update BEFORE UPDATE ON statements
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statements_no_delete BEFORE DELETE ON statements
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
"""


class PolicyLedger:
    """Verified revocations and the versions seen per policy, in one SQLite file (append-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # A revocation must survive a power cut once acknowledged: the sandbox said it has it.
        self._db = open_sqlite(self.path, durability=Durability.POWER_CUT, autocommit=True)
        self._db.executescript(_SCHEMA)
        self._revocations: dict[str, list[Revocation]] = {}
        self._statements: set[str] = set()
        self._versions: dict[str, set[int]] = {}
        self._documents: set[str] = set()
        for (text,) in self._db.execute("SELECT statement FROM statements ORDER BY seq"):
            self._remember(parse_statement(text))
        for policy_id, version, sha256 in self._db.execute("SELECT policy_id, version, sha256 FROM versions"):
            self._versions.setdefault(policy_id, set()).add(version)
            self._documents.add(sha256)

    def knows_statement(self, sha256: str) -> bool:
        """Whether the statement named ``sha256`` is recorded already."""
        return sha256 in self._statements

    def knows_document(self, sha256: str) -> bool:
        """Whether a policy document with this SHA-256 was seen already."""
        return sha256 in self._documents

    def add_revocation(self, revocation: Revocation, *, source: str) -> bool:
        """Record a verified revocation; False when it was recorded already."""
        with self._lock:
            if revocation.sha256 in self._statements:
                return False
            self._write("INSERT OR IGNORE INTO statements (sha256, policy_id, statement, received_at, source) "
                        "VALUES (?, ?, ?, ?, ?)", (revocation.sha256, revocation.policy_id, revocation.text, _now(),
                                                   source))
            self._remember(revocation)
        return True

    def see_version(self, policy_id: str, version: int, sha256: str, *, source: str) -> bool:
        """Record that a verified document of ``policy_id`` at ``version`` exists; False when known already."""
        with self._lock:
            if version in self._versions.get(policy_id, ()):
                self._documents.add(sha256)
                return False
            self._write("INSERT OR IGNORE INTO versions (policy_id, version, sha256, seen_at, source) "
                        "VALUES (?, ?, ?, ?, ?)", (policy_id, version, sha256, _now(), source))
            self._versions.setdefault(policy_id, set()).add(version)
            self._documents.add(sha256)
        return True

    def revocation_of(self, policy_id: str, version: int) -> Revocation | None:
        """The first recorded revocation that covers ``version`` of ``policy_id``, or None."""
        return next((r for r in self._revocations.get(policy_id, ()) if r.covers(version)), None)

    def newest_version(self, policy_id: str) -> int:
        """The newest version of ``policy_id`` seen (0 when none)."""
        return max(self._versions.get(policy_id, ()), default=0)

    def statements(self, *, after: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        """Recorded statements as (seq, text), oldest first, after sequence number ``after``."""
        with self._lock:
            return list(self._db.execute("SELECT seq, statement FROM statements WHERE seq > ? ORDER BY seq LIMIT ?",
                                         (after, limit)))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _remember(self, revocation: Revocation) -> None:
        self._statements.add(revocation.sha256)
        self._revocations.setdefault(revocation.policy_id, []).append(revocation)

    def _write(self, sql: str, values: tuple) -> None:
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as error:
            raise PolicyLedgerError(f"the sandbox could not record the owner's statement in its policy ledger "
                                    f"({type(error).__name__})") from None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
