"""What one access record holds, and the hash that chains it to the one before.

A record stores at most the first ``max_sql_bytes`` of each SQL text (the original and the
rewritten), cut at a character boundary, with the SHA-256 and the length of the whole text: a
query with a 60 MB comment must not write 60 MB to the log twice, and an auditor who holds the
full text can still check it against the digest. Records written before texts were bounded (and
before seals) have no lengths; their hash is computed as it was then, without them.

The last record of every batch the broker commits carries a **seal**: the broker's key id and its
Ed25519 signature over the record's hash (:mod:`broker.access_log.seals`). The seal is not part of the
hash it signs; through the chain it covers every record before it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Callable

GENESIS_HASH = "0" * 64
DEFAULT_MAX_SQL_BYTES = 16 * 1024


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
    """A record as stored: its sequence number, id, time, the SQL's hashes and lengths, the chain
    hashes and, on the last record of a batch, the writing broker's seal.

    ``sql`` and ``rewritten_sql`` may be cut (see :attr:`sql_cut`); their ``*_sha256`` and
    ``*_bytes`` are always of the whole text. ``sql_bytes`` is None only in records written before
    texts were bounded."""

    seq: int = 0
    event_id: str = ""
    at: str = ""
    sql_sha256: str = ""
    rewritten_sql_sha256: str = ""
    prev_hash: str = ""
    hash: str = ""
    sql_bytes: int | None = None
    rewritten_sql_bytes: int | None = None
    seal_key_id: str = ""
    seal: str = ""

    @property
    def sql_cut(self) -> bool:
        """Whether ``sql`` holds only the start of the text (the digest and length are of the whole)."""
        return self.sql_bytes is not None and self.sql_bytes > len(self.sql.encode())

    @property
    def rewritten_sql_cut(self) -> bool:
        """Whether ``rewritten_sql`` holds only the start of the text."""
        return self.rewritten_sql_bytes is not None and self.rewritten_sql_bytes > len(self.rewritten_sql.encode())


@dataclass(frozen=True)
class BoundedText:
    """An SQL text as a record keeps it: at most the first N bytes, and the digest and length of the whole."""

    text: str
    sha256: str
    size: int


STORED_COLUMNS = tuple(f.name for f in fields(StoredRecord))
SEAL_COLUMNS = ("seal_key_id", "seal")
BOUND_COLUMNS = ("sql_bytes", "rewritten_sql_bytes")
# The columns of logs written before seals and bounded texts (they are migrated by adding the rest).
LEGACY_COLUMNS = tuple(name for name in STORED_COLUMNS if name not in SEAL_COLUMNS + BOUND_COLUMNS)
_RECORD_FIELDS = tuple(f.name for f in fields(AccessRecord))
_LEGACY_HASHED = tuple(name for name in LEGACY_COLUMNS if name != "hash")


def sha256_text(text: str) -> str:
    """Hex SHA-256 of ``text`` as UTF-8; empty text hashes to the empty string (nothing to hash)."""
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def bound_text(text: str, max_bytes: int) -> BoundedText:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (at a character boundary), with the whole text's digest."""
    data = text.encode()
    if len(data) <= max_bytes:
        return BoundedText(text, hashlib.sha256(data).hexdigest() if data else "", len(data))
    # A prefix of valid UTF-8 can only end in an incomplete character, which "ignore" drops.
    return BoundedText(data[:max_bytes].decode("utf-8", errors="ignore"), hashlib.sha256(data).hexdigest(), len(data))


# Made once (json.dumps with arguments builds an encoder per call); the same output as
# json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_json(value: object) -> str:
    """The one JSON form every hash and signature is computed over."""
    return _CANONICAL.encode(value)


def record_hash(record: StoredRecord) -> str:
    """SHA-256 over the canonical JSON of every field except the hash and the seal (a record written
    before texts were bounded is hashed without the lengths, as it was then)."""
    body = {name: getattr(record, name) for name in _LEGACY_HASHED}
    if record.sql_bytes is not None or record.rewritten_sql_bytes is not None:
        body.update(sql_bytes=record.sql_bytes, rewritten_sql_bytes=record.rewritten_sql_bytes)
    return _hash_of(body)


def _hash_of(body: dict) -> str:
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def seal(record: AccessRecord, *, seq: int, event_id: str, at: str, prev_hash: str,
         sql: BoundedText | None = None, rewritten_sql: BoundedText | None = None,
         max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
         sealer: Callable[[str], tuple[str, str]] | None = None) -> StoredRecord:
    """``record`` as the ``seq``-th record of the chain after ``prev_hash``, with its hash.

    ``sql`` and ``rewritten_sql`` are the record's texts already bounded (the log bounds them in the
    caller's thread, outside its write lock); otherwise they are bounded here to ``max_sql_bytes``.
    ``sealer`` (:meth:`broker.access_log.seals.Sealer.__call__`) seals the record: the last of each batch."""
    sql = sql or bound_text(record.sql, max_sql_bytes)
    rewritten_sql = rewritten_sql or bound_text(record.rewritten_sql, max_sql_bytes)
    # Built field by field rather than with dataclasses.asdict: this runs for every call the broker
    # serves, and asdict's deep copy was most of its cost.
    body = {name: getattr(record, name) for name in _RECORD_FIELDS}
    body.update(sql=sql.text, rewritten_sql=rewritten_sql.text, seq=seq, event_id=event_id, at=at,
                sql_sha256=sql.sha256, rewritten_sql_sha256=rewritten_sql.sha256, prev_hash=prev_hash,
                sql_bytes=sql.size, rewritten_sql_bytes=rewritten_sql.size)
    digest = _hash_of(body)
    if sealer is not None:
        body["seal_key_id"], body["seal"] = sealer(digest)
    return StoredRecord(**body, hash=digest)


def to_row(record: StoredRecord) -> dict:
    """The column values that store ``record`` (detail as JSON text; no seal as NULL)."""
    row = {name: getattr(record, name) for name in STORED_COLUMNS}
    row["detail"] = json.dumps(record.detail, sort_keys=True, ensure_ascii=False)
    for name in SEAL_COLUMNS:
        row[name] = row[name] or None
    return row


def from_row(row: dict) -> StoredRecord:
    """The record a stored row holds."""
    values = dict(row)
    values["detail"] = json.loads(values["detail"])
    for name in SEAL_COLUMNS:
        values[name] = values.get(name) or ""
    return StoredRecord(**values)
