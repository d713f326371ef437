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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

from broker.errors import AccessLogError, QuotaError

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
CREATE INDEX IF NOT EXISTS access_log_by_grant ON access_log (grant_id, event, decision, at);
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
class Quota:
    """A grant's query limits, counted over its allowed decisions in the log itself."""

    grant_id: str
    per_day: int | None
    total: int | None
    day_start: dt.datetime  # the start of the owner's current day, as an aware datetime


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
        self._last_seq, self._last_hash = self._tail()

    def append(self, record: AccessRecord, *, now: dt.datetime | None = None, quota: Quota | None = None) -> int:
        """Write ``record`` durably and return its sequence number; raises AccessLogError on failure.

        With a ``quota``, an allowing decision is first counted against the grant's limits in the
        same transaction: over the limit, the record is written as a denial (QUOTA_EXCEEDED) and
        QuotaError is raised, so concurrent calls can never overspend a quota.
        """
        now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                exceeded = self._exceeded(quota) if quota else None
                if exceeded is not None:
                    record = replace(record, decision="deny", reason="QUOTA_EXCEEDED",
                                     detail={**record.detail, "quota": exceeded[0], "limit": exceeded[1]})
                seq = self._insert(record, now)
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._recover()
                raise AccessLogError(f"the access log could not record this access ({type(error).__name__}); "
                                     "the access is refused") from None
        if exceeded is not None:
            name, limit = exceeded
            raise QuotaError(f"grant {quota.grant_id!r} has used its {limit} queries "
                             f"{'per day' if name == 'queries_per_day' else 'in total'}",
                             subject=f"grants/{quota.grant_id}", grant=quota.grant_id, quota=name, limit=limit)
        return seq

    def _exceeded(self, quota: Quota) -> tuple[str, int] | None:
        counted = ("SELECT count(*) FROM access_log WHERE grant_id = ? AND event = 'query.decision' "
                   "AND decision = 'allow'")
        if quota.per_day is not None:
            day_start = quota.day_start.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
            today = self._db.execute(counted + " AND at >= ?", (quota.grant_id, day_start)).fetchone()[0]
            if today >= quota.per_day:
                return "queries_per_day", quota.per_day
        if quota.total is not None:
            if self._db.execute(counted, (quota.grant_id,)).fetchone()[0] >= quota.total:
                return "queries_total", quota.total
        return None

    def _recover(self) -> None:
        """After a failed write: roll back and re-read the chain's tail, if the file still answers."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._last_seq, self._last_hash = self._tail()
        except sqlite3.Error:
            pass  # the next append fails too, and is refused the same way

    def _tail(self) -> tuple[int, str]:
        last = self._db.execute("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1").fetchone()
        return last if last else (0, GENESIS_HASH)

    def _insert(self, record: AccessRecord, now: dt.datetime) -> int:
        at = now.isoformat(timespec="microseconds")
        stored = StoredRecord(**asdict(record), seq=self._last_seq + 1, event_id=str(uuid.uuid4()),
                              at=at, prev_hash=self._last_hash)
        stored = StoredRecord(**{**asdict(stored), "hash": record_hash(stored)})
        row = asdict(stored)
        row["detail"] = json.dumps(stored.detail, sort_keys=True, ensure_ascii=False)
        columns = ", ".join(row)
        self._db.execute(f"INSERT INTO access_log ({columns}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))
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
