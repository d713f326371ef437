"""The access log: one record per access, allowed or refused, chained by hashes.

Records are appended to SQLite in a transaction that is durable before the
caller moves on (the DECISION record is written before a query runs; a failed
write refuses the query). Each record carries the hash of the one before, and
the store refuses UPDATE and DELETE, so an edit, deletion, insertion or
reordering shows up in :meth:`AccessLog.verify`. Records hold SQL, decisions
and digests, never result values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from broker.errors import AccessLogError

GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_log (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    department TEXT NOT NULL,
    client TEXT NOT NULL,
    request_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    policy_sha256 TEXT NOT NULL,
    sql TEXT NOT NULL,
    rewritten_sql TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
"""


@dataclass(frozen=True)
class AccessRecord:
    """One access: who, what, under which grant, and what was decided. Never a data value."""

    event: str
    decision: str
    subject: str = ""
    department: str = ""
    client: str = ""
    request_id: str = ""
    grant_id: str = ""
    policy_version: int = 0
    policy_sha256: str = ""
    sql: str = ""
    rewritten_sql: str = ""
    reason: str = ""
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRecord(AccessRecord):
    """A record as stored: with its sequence number, id, time and chain hashes."""

    seq: int = 0
    event_id: str = ""
    at: str = ""
    prev_hash: str = ""
    hash: str = ""


def record_hash(record: StoredRecord) -> str:
    """SHA-256 over the canonical JSON of every field except the hash itself."""
    body = {k: v for k, v in asdict(record).items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


class AccessLog:
    """An append-only, hash-chained log in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        last = self._db.execute("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_seq, self._last_hash = last if last else (0, GENESIS_HASH)

    def append(self, record: AccessRecord, *, now: dt.datetime | None = None) -> int:
        """Write ``record`` durably and return its sequence number; raises AccessLogError on failure."""
        at = (now or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="microseconds")
        with self._lock:
            stored = StoredRecord(**asdict(record), seq=self._last_seq + 1, event_id=str(uuid.uuid4()),
                                  at=at, prev_hash=self._last_hash)
            stored = StoredRecord(**{**asdict(stored), "hash": record_hash(stored)})
            row = asdict(stored)
            row["detail"] = json.dumps(stored.detail, sort_keys=True, ensure_ascii=False)
            columns = ", ".join(row)
            try:
                self._db.execute(f"INSERT INTO access_log ({columns}) VALUES ({', '.join('?' * len(row))})",
                                 tuple(row.values()))
            except sqlite3.Error as error:
                raise AccessLogError(f"the access log could not record this access ({type(error).__name__}); "
                                     "the access is refused") from None
            self._last_seq, self._last_hash = stored.seq, stored.hash
        return stored.seq

    def records(self, *, after: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """Records in sequence order, starting after ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM access_log WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit or -1)).fetchall()
            names = [d[0] for d in self._db.execute("SELECT * FROM access_log LIMIT 0").description]
        for row in rows:
            values = dict(zip(names, row))
            values["detail"] = json.loads(values["detail"])
            yield StoredRecord(**values)

    def verify(self) -> list[str]:
        """Problems with the chain, first bad sequence number first; empty when the log is intact."""
        problems: list[str] = []
        expected_seq, prev = 1, GENESIS_HASH
        for record in self.records():
            if record.seq != expected_seq:
                problems.append(f"seq {record.seq}: expected seq {expected_seq} (records missing)")
            if record.prev_hash != prev:
                problems.append(f"seq {record.seq}: does not follow the record before it (chain broken)")
            if record_hash(record) != record.hash:
                problems.append(f"seq {record.seq}: contents do not match its hash (record altered)")
            expected_seq, prev = record.seq + 1, record.hash
        return problems

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
