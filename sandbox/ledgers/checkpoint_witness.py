"""The sandbox as a witness of the broker's access log: it countersigns checkpoint heads.

The broker signs a checkpoint (size, Merkle root, previous checkpoint) every so often and sends it
here. The sandbox runs on the owner's side, out of the broker operator's reach, so what it keeps
cannot be rolled back with the log's database. It accepts a checkpoint only when

- a broker key it pins (``broker_log_keys``) signed it, and
- it extends the chain it witnessed: its ``prev`` is the hash of the last checkpoint witnessed here
  and it covers more records (the first one witnessed is the log's first checkpoint; a broker that
  skipped some is told how far this sandbox has got, WITNESS_GAP, and sends the ones in between), and
- its tree extends the one witnessed: the RFC 6962 consistency proof the broker sends with it, from
  the last witnessed size to its own, verifies against both roots. Without that check a broker
  holding its log key could rewrite records the sandbox witnessed, rebuild the tree and have the fork
  countersigned; only a later reconcile against every head would notice.

It keeps each accepted checkpoint in a ``witnessed_checkpoints`` table of its execution ledger
file (append-only and hash-chained like the executions) with its countersignature under the
sandbox's own witness key, and answers with that countersignature. A signed checkpoint that does
not extend the chain (the log was rolled back or rewritten after the sandbox saw it) is refused
(CHECKPOINT_FORK) and kept as an alarm. ``dsbroker audit reconcile`` then checks the log against
every witnessed head: it must still hold that many records with that Merkle root.

The witness history must not vanish without a trace either: a table dropped from the ledger (or
emptied) would otherwise be created again, empty, by the next start, and reconcile would pass a log
whose witnessed end was cut off. The first entry written also writes a mark (``ledger_marks``) that
this ledger has witnessed; a sandbox that finds the mark without its entries does not create the
table again, raises the alarm and witnesses nothing (WITNESS_HISTORY_LOST), and reconcile reports it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.database import Durability, open_sqlite
from dsbroker.records.checkpoints import Checkpoint, Countersignature, countersign, key_id, signature_valid
from dsbroker.records.merkle import MAX_PROOF_NODES, verify_consistency
from dsbroker.records.access_record import GENESIS_HASH, canonical_json
from dsbroker.errors import WitnessError
from dsbroker.records.witnessed import FORK, WITNESSED, WITNESSED_MARK, Witnessed, entry_hash

log = logging.getLogger(__name__)
MAX_FORK_ALARMS = 100  # refused checkpoints kept as alarms; past these a fork is refused and only logged
INT64_MAX = 2 ** 63 - 1
MAX_TIME_CHARS = 40  # 2026-11-21T09:30:00.000000+00:00 is 32
MAX_SIGNATURE_CHARS = 128  # base64 of a 64-byte Ed25519 signature is 88
_HASH = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_CHECKPOINTS = 1000  # per request: a broker catching up sends the ones in between in pages
_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed_checkpoints (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    root TEXT NOT NULL,
    checkpoint_hash TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    countersignature TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS witnessed_by_checkpoint ON witnessed_checkpoints (checkpoint_hash);
CREATE TRIGGER IF NOT EXISTS witnessed_checkpoints_no_update BEFORE UPDATE ON witnessed_checkpoints
BEGIN SELECT RAISE(ABORT, 'the witness ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS witnessed_checkpoints_no_delete BEFORE DELETE ON witnessed_checkpoints
BEGIN SELECT RAISE(ABORT, 'the witness ledger is append-only'); END;
"""
# A mark that this ledger has witnessed, written with its first entry; it outlives a dropped witness table.
_MARKS = """
CREATE TABLE IF NOT EXISTS ledger_marks (
    name TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ledger_marks_no_update BEFORE UPDATE ON ledger_marks
BEGIN SELECT RAISE(ABORT, 'the ledger marks are append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_marks_no_delete BEFORE DELETE ON ledger_marks
BEGIN SELECT RAISE(ABORT, 'the ledger marks are append-only'); END;
"""


class CheckpointWitness:
    """Witnesses the checkpoints of one broker log, in the execution ledger's file."""

    def __init__(self, path: str | Path, *, broker_keys: Sequence[ed25519.Ed25519PublicKey],
                 witness_key: ed25519.Ed25519PrivateKey | None, witness_id: str) -> None:
        """``broker_keys`` are the pinned keys of the brokers that write the log (none: this sandbox
        witnesses nothing, and says so); ``witness_key`` countersigns."""
        self.path = Path(path)
        self.broker_keys = {key_id(key): key for key in broker_keys}
        self.witness_key = witness_key
        self.witness_id = witness_id
        self._lock = threading.Lock()
        # A witnessed head must survive a power cut.
        self._db = open_sqlite(self.path, durability=Durability.POWER_CUT, autocommit=True)
        self.history_lost = self._open_history()
        if self.history_lost:
            log.error("ALARM: %s: %s; this sandbox witnesses no checkpoint until the owner restores the ledger "
                      "(or starts a new one with a new log)", self.path, self.history_lost)

    def _open_history(self) -> str:
        """Create the witness table, unless the ledger's mark says it held entries that are gone; returns
        what was lost ("" when nothing was)."""
        existed = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                                   "'witnessed_checkpoints'").fetchone() is not None
        self._db.executescript(_MARKS)
        marked = self._db.execute("SELECT 1 FROM ledger_marks WHERE name = ?", (WITNESSED_MARK,)).fetchone()
        if not existed and marked:
            return "the ledger has witnessed checkpoints, but its witness table is gone (dropped)"
        self._db.executescript(_SCHEMA)
        entries = self._db.execute("SELECT 1 FROM witnessed_checkpoints LIMIT 1").fetchone()
        if marked and not entries:
            return "the ledger has witnessed checkpoints, but its witness table is empty (its entries were deleted)"
        if entries and not marked:  # a ledger from before the mark: mark it now
            self._db.execute("INSERT INTO ledger_marks (name, at) VALUES (?, ?)",
                             (WITNESSED_MARK, dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")))
        return ""

    def witness(self, checkpoints: Sequence[Checkpoint], proofs: Sequence[Sequence[str]], *,
                now: dt.datetime | None = None) -> Countersignature:
        """Witness ``checkpoints`` (oldest first) and countersign the last; raises WitnessError when refused.

        ``proofs[i]`` is the consistency proof (hex nodes) from the checkpoint ``checkpoints[i]`` names as
        ``prev`` to it."""
        if not self.broker_keys or self.witness_key is None:
            raise WitnessError("this sandbox pins no broker log key, so it witnesses no checkpoint (set "
                               "broker_log_keys)", reason="WITNESS_NOT_CONFIGURED")
        if self.history_lost:
            raise WitnessError(f"this sandbox will not witness over a ledger whose witness history is gone: "
                               f"{self.history_lost}", reason="WITNESS_HISTORY_LOST")
        if not checkpoints or len(checkpoints) > MAX_CHECKPOINTS:
            raise WitnessError(f"send between 1 and {MAX_CHECKPOINTS} checkpoints, oldest first",
                               reason="CHECKPOINTS_INVALID", field="checkpoints")
        if len(proofs) != len(checkpoints) or any(len(proof) > MAX_PROOF_NODES for proof in proofs):
            raise WitnessError(f"each checkpoint carries its consistency proof, of at most {MAX_PROOF_NODES} nodes",
                               reason="CHECKPOINTS_INVALID", field="checkpoints.consistency_proof_hashes")
        for checkpoint, proof in zip(checkpoints, proofs, strict=True):
            _check_fields(checkpoint, proof)
        for checkpoint in checkpoints:
            key = self.broker_keys.get(checkpoint.key_id)
            if key is None or not signature_valid(checkpoint, key):
                raise WitnessError(f"the checkpoint at size {checkpoint.size} is not signed by a broker key this "
                                   "sandbox pins", reason="CHECKPOINT_NOT_TRUSTED",
                                   size=checkpoint.size)
        now = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        with self._lock:
            countersignature = None
            for checkpoint, proof in zip(checkpoints, proofs, strict=True):
                countersignature = self._witness_one(checkpoint, list(proof), now)
            return countersignature

    def _witness_one(self, checkpoint: Checkpoint, proof: list[str], now: dt.datetime) -> Countersignature:
        digest = checkpoint.hash()
        seen = self._db.execute("SELECT countersignature FROM witnessed_checkpoints WHERE checkpoint_hash = ? "
                                "AND kind = ?", (digest, WITNESSED)).fetchone()
        if seen is not None:
            return Countersignature(**json.loads(seen[0]))  # witnessed before: the same answer
        head = self._db.execute("SELECT size, checkpoint_hash, root FROM witnessed_checkpoints WHERE kind = ? "
                                "ORDER BY seq DESC LIMIT 1", (WITNESSED,)).fetchone()
        head_size, head_hash, head_root = head if head else (0, GENESIS_HASH, "")
        if checkpoint.size > head_size and checkpoint.prev == head_hash:
            # The first checkpoint extends the empty tree, whatever it holds; every later one must prove
            # that its first head_size records are the ones witnessed.
            if head_size and not verify_consistency(head_size, checkpoint.size, head_root, checkpoint.root, proof):
                self._fork(checkpoint, digest, head_size, now)
                raise WitnessError(f"the checkpoint at size {checkpoint.size} names the one witnessed here, but its "
                                   f"consistency proof from size {head_size} does not verify: the records this "
                                   "sandbox witnessed were rewritten", reason="CHECKPOINT_FORK",
                                   size=checkpoint.size, witnessed_size=head_size)
            countersignature = countersign(self.witness_key, checkpoint, witness=self.witness_id, at=now)
            self._append(WITNESSED, checkpoint, digest, canonical_json(asdict(countersignature)), now)
            return countersignature
        # A checkpoint at or below the head, one that names an older witnessed checkpoint as its
        # predecessor, or a first checkpoint when the log's first was witnessed long ago (the log was
        # dropped and started over) cannot extend the chain, whatever comes between.
        branches_off = checkpoint.size <= head_size or checkpoint.prev == GENESIS_HASH or self._db.execute(
            "SELECT 1 FROM witnessed_checkpoints WHERE checkpoint_hash = ? AND kind = ?",
            (checkpoint.prev, WITNESSED)).fetchone() is not None
        if not branches_off:
            raise WitnessError(f"this sandbox has witnessed the log up to size {head_size}; send the checkpoints "
                               "after it first", reason="WITNESS_GAP", witnessed_size=head_size)
        self._fork(checkpoint, digest, head_size, now)
        raise WitnessError(f"the checkpoint at size {checkpoint.size} does not extend the checkpoints this sandbox "
                           f"witnessed (up to size {head_size}): the log was rolled back or rewritten",
                           reason="CHECKPOINT_FORK", size=checkpoint.size, witnessed_size=head_size)

    def _fork(self, checkpoint: Checkpoint, digest: str, head_size: int, now: dt.datetime) -> None:
        """Keep a refused checkpoint as an alarm (once, and at most MAX_FORK_ALARMS of them: the first
        tell the owner all there is to know, and a broker that signs forks by the thousand must not fill
        the owner's disk)."""
        kept = self._db.execute("SELECT count(*) FROM witnessed_checkpoints WHERE kind = ?", (FORK,)).fetchone()[0]
        if kept < MAX_FORK_ALARMS and self._db.execute(
                "SELECT 1 FROM witnessed_checkpoints WHERE checkpoint_hash = ? AND kind = ?",
                (digest, FORK)).fetchone() is None:
            self._append(FORK, checkpoint, digest, "", now)
            log.error("ALARM: the broker's checkpoint at size %d does not extend the checkpoints this sandbox "
                      "witnessed (up to size %d): its access log was rolled back or rewritten", checkpoint.size,
                      head_size)

    def _append(self, kind: str, checkpoint: Checkpoint, digest: str, countersignature: str, now: dt.datetime) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            last = self._db.execute("SELECT seq, hash FROM witnessed_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
            entry = Witnessed(seq=seq, at=now.isoformat(timespec="microseconds"), kind=kind, size=checkpoint.size,
                              root=checkpoint.root, checkpoint_hash=digest, checkpoint=checkpoint.to_json(),
                              countersignature=countersignature, prev_hash=prev)
            values = asdict(Witnessed(**{**asdict(entry), "hash": entry_hash(entry)}))
            self._db.execute(f"INSERT INTO witnessed_checkpoints ({', '.join(values)}) VALUES "
                             f"({', '.join('?' * len(values))})", tuple(values.values()))
            self._db.execute("INSERT OR IGNORE INTO ledger_marks (name, at) VALUES (?, ?)", (WITNESSED_MARK, entry.at))
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise WitnessError(f"the sandbox could not record the checkpoint in its ledger ({type(error).__name__})",
                               reason="WITNESS_LEDGER_UNAVAILABLE") from None

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


def _check_fields(checkpoint: Checkpoint, proof: Sequence[str]) -> None:
    """Refuse a checkpoint whose fields are not what a broker's log writes (before its signature is read or
    anything of it is kept): a first checkpoint's root is taken on trust, so it must at least be a root."""
    def invalid(what: str, field: str) -> WitnessError:
        return WitnessError(f"a checkpoint's {what}", reason="CHECKPOINT_INVALID", field=f"checkpoints.{field}")

    if not 0 <= checkpoint.size <= INT64_MAX:
        raise invalid("size is out of range", "size")
    if not _HASH.fullmatch(checkpoint.root):
        raise invalid("root is not 64 hex digits", "root")
    if not _HASH.fullmatch(checkpoint.prev):
        raise invalid("prev is not 64 hex digits", "prev")
    if not _is_time(checkpoint.at):
        raise invalid("sign_time is not a time with its offset", "sign_time")
    if not _KEY_ID.fullmatch(checkpoint.key_id):
        raise invalid("key_id is not a key id", "key_id")
    if len(checkpoint.signature) > MAX_SIGNATURE_CHARS:
        raise invalid("signature is too long", "signature")
    if not all(_HASH.fullmatch(node) for node in proof):
        raise invalid("consistency proof holds a node that is not 64 hex digits", "consistency_proof_hashes")


def _is_time(text: str) -> bool:
    if len(text) > MAX_TIME_CHARS:
        return False
    try:
        return dt.datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False
