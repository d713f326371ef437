"""The sandbox's own record of what the owner has said about its policies: revocations, the newest
version of each policy it has seen, and the bodies it has seen of each version.

The broker may be hostile: it could stop passing a revocation on, or send a plan under an old
version of a policy once a newer one is in force. So whatever reaches the sandbox and verifies
against the owner's trust file (a revocation, a signed policy document) is written here, kept across
restarts, and never taken back: the file is append-only (triggers refuse UPDATE and DELETE), like the
execution ledger. Lookups are served from memory, read again from the file whenever another process over it
has written (SQLite's ``data_version``); only something new is written. If it cannot be
written the plan is refused (UNAVAILABLE), so nothing the owner said is forgotten silently.

A version has one body (the bytes its approvals sign). Every distinct owner-signed body of a version is
recorded, in the order seen, so that a second one, the owner's change signed without raising the version,
is not forgotten either: :class:`sandbox.checks.policy_standing.PolicyStanding` refuses every plan under
such a version, the first body's included, since a hostile broker would replay whichever body suits it.
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
CREATE TABLE IF NOT EXISTS bodies (
    seq INTEGER PRIMARY KEY,
    policy_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body_sha256 TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (policy_id, version, body_sha256)
);
CREATE TRIGGER IF NOT EXISTS statements_no_update BEFORE UPDATE ON statements
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS statements_no_delete BEFORE DELETE ON statements
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS bodies_no_update BEFORE UPDATE ON bodies
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS bodies_no_delete BEFORE DELETE ON bodies
BEGIN SELECT RAISE(ABORT, 'the policy ledger is append-only'); END;
"""


class PolicyLedger:
    """Verified revocations, the versions seen per policy and the bodies seen per version, in one SQLite file
    (append-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # A revocation must survive a power cut once acknowledged: the sandbox said it has it.
        try:
            self._db = open_sqlite(self.path, durability=Durability.POWER_CUT, autocommit=True)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:  # a damaged file stops the start: an empty ledger would forget the owner
            raise PolicyLedgerError(f"the sandbox's policy ledger {self.path} cannot be read "
                                    f"({type(error).__name__}); restore it from a backup") from None
        self._revocations: dict[str, list[Revocation]] = {}
        self._statements: set[str] = set()
        self._versions: dict[str, set[int]] = {}
        self._documents: set[str] = set()
        self._bodies: dict[tuple[str, int], tuple[str, ...]] = {}
        self._data_version: int | None = None
        self._fresh()

    def _fresh(self) -> None:
        """Read the file again where another connection (another sandbox process over this file) committed since
        the last read (SQLite's ``data_version``): what one process learnt, a revocation, a newer version, a second
        body, holds for every process over the file at once. Called under ``_lock`` or before it is shared."""
        try:
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            if version == self._data_version:
                return
            revocations: dict[str, list[Revocation]] = {}
            statements: set[str] = set()
            versions: dict[str, set[int]] = {}
            documents: set[str] = set()
            bodies: dict[tuple[str, int], tuple[str, ...]] = {}
            for (text,) in self._db.execute("SELECT statement FROM statements ORDER BY seq"):
                revocation = parse_statement(text)
                statements.add(revocation.sha256)
                revocations.setdefault(revocation.policy_id, []).append(revocation)
            for policy_id, version_seen, sha256 in self._db.execute("SELECT policy_id, version, sha256 FROM versions"):
                versions.setdefault(policy_id, set()).add(version_seen)
                documents.add(sha256)
            for policy_id, version_seen, body in self._db.execute(
                    "SELECT policy_id, version, body_sha256 FROM bodies ORDER BY seq"):
                bodies[(policy_id, version_seen)] = (*bodies.get((policy_id, version_seen), ()), body)
        except sqlite3.Error as error:
            raise PolicyLedgerError(f"the sandbox could not read its policy ledger ({type(error).__name__})") from None
        self._revocations, self._statements, self._versions = revocations, statements, versions
        self._documents, self._bodies, self._data_version = documents, bodies, version

    def knows_statement(self, sha256: str) -> bool:
        """Whether the statement named ``sha256`` is recorded already."""
        with self._lock:
            self._fresh()
            return sha256 in self._statements

    def knows_document(self, sha256: str) -> bool:
        """Whether a policy document with this SHA-256 was seen already."""
        with self._lock:
            self._fresh()
            return sha256 in self._documents

    def add_revocation(self, revocation: Revocation, *, source: str) -> bool:
        """Record a verified revocation; False when it was recorded already."""
        with self._lock:
            self._fresh()
            if revocation.sha256 in self._statements:
                return False
            self._write("INSERT OR IGNORE INTO statements (sha256, policy_id, statement, received_at, source) "
                        "VALUES (?, ?, ?, ?, ?)", (revocation.sha256, revocation.policy_id, revocation.text, _now(),
                                                   source))
            self._remember(revocation)
        return True

    def see_version(self, policy_id: str, version: int, sha256: str, *, body_sha256: str, source: str) -> bool:
        """Record that a verified document (SHA-256 ``sha256``) of ``policy_id`` at ``version``, whose body has
        SHA-256 ``body_sha256``, exists; whether the version was new here."""
        key = (policy_id, version)
        with self._lock:
            self._fresh()
            new_version = version not in self._versions.get(policy_id, ())
            if new_version:
                self._write("INSERT OR IGNORE INTO versions (policy_id, version, sha256, seen_at, source) "
                            "VALUES (?, ?, ?, ?, ?)", (policy_id, version, sha256, _now(), source))
                self._versions.setdefault(policy_id, set()).add(version)
            if body_sha256 not in self._bodies.get(key, ()):
                self._write("INSERT OR IGNORE INTO bodies (policy_id, version, body_sha256, seen_at, source) "
                            "VALUES (?, ?, ?, ?, ?)", (policy_id, version, body_sha256, _now(), source))
                # Read the version's bodies back rather than append: another sandbox process over this file may
                # have recorded one first, and the order seen is the file's.
                self._bodies[key] = self._bodies_in_file(key)
            self._documents.add(sha256)
        return new_version

    def bodies_of(self, policy_id: str, version: int) -> tuple[str, ...]:
        """The SHA-256 of each body of ``policy_id`` at ``version`` seen, first seen first (more than one: the
        owner signed a change without raising the version)."""
        with self._lock:
            self._fresh()
            return self._bodies.get((policy_id, version), ())

    def revocation_of(self, policy_id: str, version: int) -> Revocation | None:
        """The first recorded revocation that covers ``version`` of ``policy_id``, or None."""
        with self._lock:
            self._fresh()
            return next((r for r in self._revocations.get(policy_id, ()) if r.covers(version)), None)

    def newest_version(self, policy_id: str) -> int:
        """The newest version of ``policy_id`` seen (0 when none)."""
        with self._lock:
            self._fresh()
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

    def _bodies_in_file(self, key: tuple[str, int]) -> tuple[str, ...]:
        try:
            return tuple(body for (body,) in self._db.execute(
                "SELECT body_sha256 FROM bodies WHERE policy_id = ? AND version = ? ORDER BY seq", key))
        except sqlite3.Error as error:
            raise PolicyLedgerError(f"the sandbox could not read its policy ledger ({type(error).__name__})") from None

    def _write(self, sql: str, values: tuple) -> None:
        try:
            self._db.execute(sql, values)
        except sqlite3.Error as error:
            raise PolicyLedgerError(f"the sandbox could not record the owner's statement in its policy ledger "
                                    f"({type(error).__name__})") from None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")
