"""What one access record holds, and the hash that chains it to the one before."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AccessRecord:
    """One access: who, what, under which grant, and what was decided. Never a data value."""

    event: str
    decision: str
    subject: str = ""
    department: str = ""
    token_id: str = ""
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
    """A record as stored: its sequence number, id, time, the SQL's hashes and the chain hashes."""

    seq: int = 0
    event_id: str = ""
    at: str = ""
    sql_sha256: str = ""
    rewritten_sql_sha256: str = ""
    prev_hash: str = ""
    hash: str = ""


STORED_COLUMNS = tuple(f.name for f in fields(StoredRecord))
_RECORD_FIELDS = tuple(f.name for f in fields(AccessRecord))
_HASHED = tuple(name for name in STORED_COLUMNS if name != "hash")


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` as UTF-8; empty text hashes to the empty string (nothing to hash)."""
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def canonical_json(value) -> str:
    """The one JSON form every hash and signature is computed over."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def record_hash(record: StoredRecord) -> str:
    """SHA-256 over the canonical JSON of every field except the hash itself."""
    return _hash_of({name: getattr(record, name) for name in _HASHED})


def _hash_of(body: dict) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def seal(record: AccessRecord, *, seq: int, event_id: str, at: str, prev_hash: str) -> StoredRecord:
    """``record`` as the ``seq``-th record of the chain after ``prev_hash``, with its hash."""
    # Built field by field rather than with dataclasses.asdict: this runs for every call the broker
    # serves, and asdict's deep copy was most of its cost.
    body = {name: getattr(record, name) for name in _RECORD_FIELDS}
    body.update(seq=seq, event_id=event_id, at=at, sql_sha256=sha256_text(record.sql),
                rewritten_sql_sha256=sha256_text(record.rewritten_sql), prev_hash=prev_hash)
    return StoredRecord(**body, hash=_hash_of(body))


def to_row(record: StoredRecord) -> dict:
    """The column values that store ``record`` (detail as JSON text)."""
    row = {name: getattr(record, name) for name in STORED_COLUMNS}
    row["detail"] = json.dumps(record.detail, sort_keys=True, ensure_ascii=False)
    return row


def from_row(row: dict) -> StoredRecord:
    """The record a stored row holds."""
    values = dict(row)
    values["detail"] = json.loads(values["detail"])
    return StoredRecord(**values)
