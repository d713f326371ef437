"""The access log: one record per access, allowed or refused, chained by hashes, sealed, checkpointed.

- **Durable before the caller moves on.** :meth:`AccessLog.append` returns only once its record is
  committed (the DECISION record is written before a query runs; a failed write refuses the query,
  UNAVAILABLE).
- **Group commit.** One writer thread takes every record waiting and commits them in one
  transaction, so sixteen callers share one fsync instead of queueing for sixteen.
- **Sealed.** The last record of every batch carries this broker's Ed25519 signature over its hash
  (:mod:`broker.audit.seals`). Before extending the chain the broker checks that its tail is sealed
  by a key it trusts (its own or a peer broker's), and that the records it wrote itself are still
  there; before signing a checkpoint it checks every record since the last one it verified.
  Otherwise it raises the alarm and refuses every access (UNAVAILABLE ``ACCESS_LOG_TAMPERED``)
  rather than sign over a record no broker wrote.
- **Tamper-evident.** Each record carries the hash of the one before; the store refuses UPDATE and
  DELETE; and every ``checkpoint_every`` records, every ``checkpoint_seconds`` and at close, the
  writer signs a checkpoint (size, Merkle root, previous checkpoint) with the broker's Ed25519 key
  and hands it to ``on_checkpoint`` (the sandboxes witness it). :mod:`broker.audit.verify` checks
  all of it.

Records hold SQL (at most ``max_sql_bytes`` of each text, with the whole text's digest), decisions
and digests, never result values.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from typing import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.checkpoints import Checkpoint, sign_checkpoint
from broker.audit.log_store import LogStore, RecordFilter, WriteTransaction, open_log_store
from broker.audit.merkle import MerkleAccumulator
from broker.audit.records import (DEFAULT_MAX_SQL_BYTES, GENESIS_HASH, AccessRecord, StoredRecord, bound_text,
                                  record_hash, seal)
from broker.audit.seals import Sealer, TrustedKeys
from broker.errors import AccessLogError, AccessLogTampered, DsbrokerError, QuotaError
from broker.store import is_database_error

__all__ = ["AccessLog", "AccessRecord", "GENESIS_HASH", "Quota", "RecordFilter", "StoredRecord", "record_hash",
           "records_written"]
log = logging.getLogger(__name__)

MAX_BATCH = 512
# While a call is being served: the sequence numbers it has written, so the call-audit interceptor
# knows whether the call recorded itself (see broker.audit.calls).
records_written: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("records_written", default=None)


@dataclass(frozen=True)
class Quota:
    """A grant's query limits, counted over its allowed decisions in the log itself."""

    grant_id: str
    per_day: int | None
    total: int | None
    day_start: dt.datetime  # the start of the owner's current day, as an aware datetime


class _Pending:
    """One record waiting for the writer, and what became of it."""

    __slots__ = ("record", "now", "quota", "synced", "sql", "rewritten_sql", "done", "seq", "exceeded", "error")

    def __init__(self, record: AccessRecord, now: dt.datetime, quota: Quota | None, synced: bool,
                 max_sql_bytes: int) -> None:
        self.record, self.now, self.quota, self.synced = record, now, quota, synced
        # Bounded and hashed here, in the caller's thread: a long text must not hold up the writer.
        self.sql = bound_text(record.sql, max_sql_bytes)
        self.rewritten_sql = bound_text(record.rewritten_sql, max_sql_bytes)
        self.done = threading.Event()
        self.seq = 0
        self.exceeded: tuple[str, int] | None = None
        self.error: BaseException | None = None


class _CheckpointRequest:
    """A caller waiting for the writer to sign a checkpoint."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.checkpoint: Checkpoint | None = None


class AccessLog:
    """An append-only, hash-chained, sealed and checkpointed log in SQLite or PostgreSQL."""

    def __init__(self, location: str | Path, *, signing_key: ed25519.Ed25519PrivateKey | None = None,
                 peer_keys: Iterable[ed25519.Ed25519PublicKey] = (), checkpoint_every: int = 1000,
                 checkpoint_seconds: float = 60.0, max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
                 on_checkpoint: Callable[[Checkpoint], None] | None = None) -> None:
        """``signing_key`` seals records and signs checkpoints; without it the log is open for reading only.
        ``peer_keys`` are the other brokers' keys when several write this log. ``on_checkpoint`` hears of
        every checkpoint this broker signs (it must not block: the writer calls it)."""
        self.location = str(location)
        self.store: LogStore = open_log_store(self.location)
        self.signing_key = signing_key
        self._sealer = Sealer(signing_key) if signing_key else None
        self.key_id = self._sealer.key_id if self._sealer else ""
        self.trusted = TrustedKeys([*([signing_key.public_key()] if signing_key else []), *peer_keys])
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_sql_bytes = max_sql_bytes
        self.on_checkpoint = on_checkpoint
        self._tampered: AccessLogTampered | None = None  # once set, every access is refused
        self._tail_ok: tuple[int, str] | None = None  # the tail as this broker last wrote or checked it
        self._last_own: tuple[int, str] | None = None  # the last record this broker wrote
        self._own: dict[int, str] = {}  # seq -> hash of what this broker wrote since the last checkpoint it verified
        self._verified: tuple[int, str] = (0, GENESIS_HASH)  # the chain checked up to here; _merkle covers it
        self._queue: deque[_Pending] = deque()
        self._wakeup = threading.Condition()
        self._closing = False
        self._committing = False  # a caller (or the writer thread) is committing what waits in the queue
        self._handoff = False  # a caller asked the writer thread to carry on committing
        self._write_lock = threading.Lock()  # the store has one write connection
        self._merkle = MerkleAccumulator()
        self._checkpoint_requests: list[_CheckpointRequest] = []
        self._appended = self.store.size()
        latest = self.store.latest_checkpoint()
        self._last_checkpoint_size = latest.size if latest else 0
        self._last_checkpoint_time = time.monotonic()
        self._writer = threading.Thread(target=self._write_loop, name="access-log-writer", daemon=True)
        self._writer.start()

    # -- appending -------------------------------------------------------------------------------

    def append(self, record: AccessRecord, *, now: dt.datetime | None = None, quota: Quota | None = None,
               synced: bool = True) -> int:
        """Write ``record`` durably and return its sequence number; raises AccessLogError on failure.

        ``synced=False`` is for a record that may trail the one before it (a query's RESULT after its
        DECISION): it is committed, visible and safe from a crash of the broker when this returns,
        but reaches the disk with the next synced commit rather than paying for a flush of its own;
        a power cut in between leaves a decision without its release, which verify reports.

        With a ``quota``, an allowing decision is first counted against the grant's limits in the
        same transaction: over the limit, the record is written as a denial (QUOTA_EXCEEDED) and
        QuotaError is raised, so concurrent calls can never overspend a quota.
        """
        if self.signing_key is None:
            raise AccessLogError("this access log is open for reading only (no signing key); the access is refused")
        pending = _Pending(record, (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc), quota,
                           synced, self.max_sql_bytes)
        with self._wakeup:
            if self._closing:
                raise AccessLogError("the access log is closed; the access is refused")
            if self._tampered is not None:
                raise self._refusal()
            self._queue.append(pending)
            lead = not self._committing
            self._committing = True
        if lead:  # nobody is committing: commit here rather than wake a thread for it
            self._drain(max_batches=2)
        pending.done.wait()
        if isinstance(pending.error, DsbrokerError):
            raise self._refusal() if isinstance(pending.error, AccessLogTampered) else pending.error
        if pending.error is not None:
            raise AccessLogError(f"the access log could not record this access ({type(pending.error).__name__}); "
                                 "the access is refused")
        written = records_written.get()
        if written is not None:
            written.append(pending.seq)
        if pending.exceeded is not None:
            name, limit = pending.exceeded
            raise QuotaError(f"grant {quota.grant_id!r} has used its {limit} queries "
                             f"{'per day' if name == 'queries_per_day' else 'in total'}",
                             subject=f"grants/{quota.grant_id}", grant=quota.grant_id, quota=name, limit=limit)
        return pending.seq

    def _drain(self, max_batches: int | None) -> None:
        """Commit what waits, a batch at a time (group commit: every record that arrived while the
        last batch was committing goes into the next). Runs in whoever holds ``_committing``; a caller
        hands over to the writer thread after ``max_batches``, so its own answer is not held up by a
        stream of others' records."""
        batches = 0
        while True:
            with self._wakeup:
                if not self._queue:
                    self._committing = False
                    if self._closing:
                        self._wakeup.notify_all()
                    return
                if max_batches is not None and batches >= max_batches:
                    self._handoff = True
                    self._wakeup.notify_all()
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            self._commit(batch)
            batches += 1
            if self._checkpoint_due():
                self._checkpoint()

    def _write_loop(self) -> None:
        """The writer thread: carries on committing when a caller hands over, and signs checkpoints."""
        while True:
            with self._wakeup:
                while not (self._handoff or self._closing or self._checkpoint_requests or self._checkpoint_due()):
                    # Callers commit without waking this thread; it looks again at least this often.
                    self._wakeup.wait(timeout=self._seconds_to_checkpoint() or self.checkpoint_seconds)
                while self._closing and self._committing and not self._handoff:
                    self._wakeup.wait()  # a caller is finishing its batches
                handoff, self._handoff = self._handoff, False
                requests, self._checkpoint_requests = self._checkpoint_requests, []
                closing = self._closing
            if handoff:
                self._drain(max_batches=None)
            if requests or self._checkpoint_due() or closing:
                checkpoint = self._checkpoint()
                for request in requests:
                    request.checkpoint = checkpoint
                    request.done.set()
            if closing:
                with self._wakeup:
                    if self._committing or self._handoff or self._queue:
                        continue
                return

    def _commit(self, batch: list[_Pending]) -> None:
        with self._write_lock:
            self._commit_locked(batch)

    def _commit_locked(self, batch: list[_Pending]) -> None:
        written: list[tuple[int, str]] = []
        try:
            with self.store.write(synced=any(pending.synced for pending in batch)) as transaction:
                seq, prev = self._trusted_tail(transaction)
                for index, pending in enumerate(batch):
                    record = pending.record
                    pending.exceeded = self._exceeded(transaction, pending.quota) if pending.quota else None
                    if pending.exceeded is not None:
                        record = replace(record, decision="deny", reason="QUOTA_EXCEEDED", detail={
                            **record.detail, "quota": pending.exceeded[0], "limit": pending.exceeded[1]})
                    seq += 1
                    # One seal per batch, on its last record: through the chain it covers the rest.
                    stored = seal(record, seq=seq, event_id=str(uuid.uuid4()),
                                  at=pending.now.isoformat(timespec="microseconds"), prev_hash=prev,
                                  sql=pending.sql, rewritten_sql=pending.rewritten_sql,
                                  sealer=self._sealer if index == len(batch) - 1 else None)
                    transaction.insert(stored)
                    pending.seq, prev = seq, stored.hash
                    written.append((seq, prev))
            self._appended = seq
            self._tail_ok = self._last_own = (seq, prev)
            self._own.update(written)
        except BaseException as error:  # noqa: BLE001 - every waiter must hear of it, whatever it was
            if not is_database_error(error) and not isinstance(error, AccessLogTampered):
                log.exception("the access log's writer failed")
            for pending in batch:
                pending.error = error
                pending.done.set()
            return
        for pending in batch:
            pending.done.set()

    # -- what the broker will extend --------------------------------------------------------------

    def _trusted_tail(self, transaction: WriteTransaction) -> tuple[int, str]:
        """The tail to chain onto, once it is known to be one a trusted broker wrote; raises
        AccessLogTampered (and raises the alarm) otherwise. Inside the write transaction, so on
        PostgreSQL it is the tail as re-read under the advisory lock that several brokers share."""
        seq, tail_hash = transaction.tail()
        if self._tail_ok == (seq, tail_hash):
            return seq, tail_hash  # what this broker wrote or checked last: nobody wrote since
        if self._last_own is not None:
            own_seq, own_hash = self._last_own
            if seq < own_seq or transaction.hash_at(own_seq) != own_hash:
                self._alarm(f"record {own_seq}, which this broker wrote, is gone or replaced (the log now ends at "
                            f"{seq})", seq=min(own_seq, seq + 1))
        latest = transaction.latest_checkpoint()
        if latest is not None and seq < latest.size:
            self._alarm(f"the log ends at {seq} records but its checkpoint at size {latest.size} covers more "
                        "(records removed from the end)", seq=seq + 1)
        if seq == 0:
            return seq, tail_hash
        record = transaction.record(seq)
        if record_hash(record) != record.hash:
            self._alarm(f"record {seq}, the log's last, does not match its hash", seq=seq)
        if record.seal:
            if not self.trusted.sealed(record):
                self._alarm(f"record {seq}, the log's last, carries a seal that no trusted broker key made "
                            f"(key id {record.seal_key_id or 'none'})", seq=seq)
        elif not self._legacy_tail_covered(transaction, record, latest):
            self._alarm(f"record {seq}, the log's last, is not sealed: no broker wrote it", seq=seq)
        self._tail_ok = (seq, tail_hash)
        return seq, tail_hash

    def _legacy_tail_covered(self, transaction: WriteTransaction, record: StoredRecord,
                             latest: Checkpoint | None) -> bool:
        """Whether an unsealed tail is the end of a log written before seals and exactly covered by a
        trusted checkpoint whose root still matches (a broker stopped cleanly always left one)."""
        if record.sql_bytes is not None or latest is None or latest.size != record.seq or not self.trusted.signed(latest):
            return False
        if self._verified[0] < latest.size:
            self._catch_up(transaction, latest)
        return True

    def _catch_up(self, transaction: WriteTransaction, checkpoint: Checkpoint) -> None:
        """Extend the verified prefix over a trusted ``checkpoint``: the stored hashes must have its root."""
        hashes = transaction.hashes(self._verified[0], checkpoint.size)
        self._merkle.extend(hashes)
        if self._merkle.size != checkpoint.size or self._merkle.root() != checkpoint.root:
            self._alarm(f"the records up to the checkpoint at size {checkpoint.size} are not the ones it was signed "
                        "over", seq=checkpoint.size)
        self._verified = (checkpoint.size, hashes[-1] if hashes else self._verified[1])

    def _verify_since(self, transaction: WriteTransaction, size: int) -> None:
        """Check every record after the verified prefix up to ``size`` and extend the tree over them.

        A record this broker wrote must still have the hash it wrote; any other must hash to what it
        stores, follow the one before, and belong to a run that ends in a seal by a trusted key."""
        after, prev = self._verified
        rows = transaction.chain(after, size)
        foreign = [seq for seq, _prev, digest, _key, _seal in rows if self._own.get(seq) != digest]
        whole = {r.seq: r for r in transaction.records(foreign[0] - 1, foreign[-1])} if foreign else {}
        expected, run_start = after + 1, None
        for seq, prev_hash, digest, _key, _seal in rows:
            if seq != expected or prev_hash != prev:
                self._alarm(f"record {expected} does not follow the record before it", seq=expected)
            if seq in self._own:
                if self._own[seq] != digest:
                    self._alarm(f"record {seq} is not the record this broker wrote there", seq=seq)
                if run_start is not None:
                    self._alarm(f"records {run_start}..{seq - 1} are not sealed by any trusted broker", seq=run_start)
            else:
                record = whole[seq]
                if record_hash(record) != digest:
                    self._alarm(f"record {seq} does not match its hash", seq=seq)
                if self.trusted.sealed(record):
                    run_start = None
                elif run_start is None:
                    run_start = seq
            expected, prev = seq + 1, digest
        if run_start is not None or expected != size + 1:
            self._alarm(f"records {run_start or expected}..{size} are not sealed by any trusted broker",
                        seq=run_start or expected)
        self._merkle.extend(digest for _seq, _prev, digest, _key, _seal in rows)
        self._verified = (size, prev)
        for seq in [seq for seq in self._own if seq <= size]:
            del self._own[seq]

    def _alarm(self, message: str, *, seq: int) -> None:
        """Raise the alarm once, in the broker's own log, and refuse from now on."""
        if self._tampered is None:
            log.critical("ALARM: the access log was tampered with: %s. Every access is refused until an operator "
                         "looks (keep the log for the auditors and start a new one).", message)
        self._tampered = AccessLogTampered(message, seq=seq)
        raise self._refusal()

    def alarm(self, message: str) -> None:
        """Refuse every access from now on: a witness found that the log forked from what it witnessed."""
        try:
            self._alarm(message, seq=0)
        except AccessLogTampered:
            pass

    @property
    def tampered(self) -> AccessLogTampered | None:
        """The finding that made the log refuse accesses, if one did."""
        return self._tampered

    def _refusal(self) -> AccessLogTampered:
        """What a caller hears once the log was found tampered with (no record's contents in it)."""
        seq = self._tampered.metadata.get("seq", "0") if self._tampered else "0"
        return AccessLogTampered(f"the access log holds records no broker wrote, or lost records a broker wrote "
                                 f"(seq {seq}); the access is refused until an operator looks", seq=seq)

    @staticmethod
    def _exceeded(transaction, quota: Quota) -> tuple[str, int] | None:
        if quota.per_day is not None:
            day_start = quota.day_start.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
            if transaction.count_allowed_queries(quota.grant_id, day_start) >= quota.per_day:
                return "queries_per_day", quota.per_day
        if quota.total is not None and transaction.count_allowed_queries(quota.grant_id, None) >= quota.total:
            return "queries_total", quota.total
        return None

    # -- checkpoints -----------------------------------------------------------------------------

    def _seconds_to_checkpoint(self) -> float | None:
        if self.signing_key is None or self._tampered is not None or self._appended <= self._last_checkpoint_size:
            return None
        return max(0.01, self.checkpoint_seconds - (time.monotonic() - self._last_checkpoint_time))

    def _checkpoint_due(self) -> bool:
        if self.signing_key is None or self._tampered is not None or self._appended <= self._last_checkpoint_size:
            return False
        return (self._appended - self._last_checkpoint_size >= self.checkpoint_every
                or time.monotonic() - self._last_checkpoint_time >= self.checkpoint_seconds)

    def checkpoint(self) -> Checkpoint | None:
        """Sign a checkpoint over the log as it stands now (also done at intervals and at close).

        Returns the newest checkpoint (None without a signing key or when signing failed)."""
        request = _CheckpointRequest()
        with self._wakeup:
            if self._closing:
                raise AccessLogError("the access log is closed")
            self._checkpoint_requests.append(request)
            self._wakeup.notify()
        request.done.wait()
        return request.checkpoint

    def _checkpoint(self) -> Checkpoint | None:
        """Sign and store a checkpoint; under the write lock, as the store has one write connection."""
        if self.signing_key is None or self._tampered is not None:
            return None
        with self._write_lock:
            checkpoint, signed = self._checkpoint_locked()
        if signed and self.on_checkpoint is not None:
            try:
                self.on_checkpoint(checkpoint)
            except Exception:  # noqa: BLE001 - the witnesses' trouble must not stop the log
                log.exception("handing a checkpoint to the witnesses failed")
        return checkpoint

    def _checkpoint_locked(self) -> tuple[Checkpoint | None, bool]:
        """The newest checkpoint, and whether this call signed it."""
        try:
            with self.store.write() as transaction:
                size, _ = self._trusted_tail(transaction)
                latest = transaction.latest_checkpoint()
                if latest is not None and not self.trusted.signed(latest):
                    self._alarm(f"the newest checkpoint (size {latest.size}) is not signed by a trusted broker key",
                                seq=latest.size)
                if latest is not None and latest.size >= size:
                    self._note_checkpoint(size)
                    return latest, False
                if latest is not None and self._verified[0] < latest.size:
                    self._catch_up(transaction, latest)
                if self._verified[0] > size:
                    self._alarm(f"the log ends at {size} records, before {self._verified[0]} this broker checked",
                                seq=size + 1)
                self._verify_since(transaction, size)
                checkpoint = sign_checkpoint(self.signing_key, size=size, root=self._merkle.root(),
                                             prev=latest.hash() if latest else None,
                                             at=dt.datetime.now(dt.timezone.utc))
                transaction.insert_checkpoint(checkpoint)
        except AccessLogTampered:
            return None, False
        except Exception as error:  # noqa: BLE001 - a missed checkpoint is retried; the records are safe
            if is_database_error(error):
                log.warning("could not write a checkpoint (%s); will retry", type(error).__name__)
            else:
                log.exception("signing a checkpoint failed")
            self._last_checkpoint_time = time.monotonic()
            return None, False
        self._note_checkpoint(size)
        return checkpoint, True

    def _note_checkpoint(self, size: int) -> None:
        self._last_checkpoint_size = size
        self._last_checkpoint_time = time.monotonic()

    # -- reading ---------------------------------------------------------------------------------

    def records(self, *, after: int = 0, limit: int | None = None,
                where: RecordFilter = RecordFilter()) -> list[StoredRecord]:
        """Records in sequence order, starting after ``after``."""
        return self.store.records(after=after, limit=limit, where=where)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        return self.store.checkpoints()

    def verify(self) -> list[str]:
        """Problems with the log, checked against this broker's trusted keys, first bad sequence number
        first; empty when the log is intact."""
        from broker.audit.verify import verify_log

        return [str(finding) for finding in verify_log(self.store, public_keys=self.trusted.by_id.values()).problems]

    def finish(self) -> None:
        """Write what is waiting and sign a last checkpoint; the log can still be read, no longer written."""
        with self._wakeup:
            if not self._closing:
                self._closing = True
                self._wakeup.notify()
        self._writer.join()

    def close(self) -> None:
        """Write what is waiting, sign a last checkpoint, and close the store."""
        self.finish()
        self.store.close()
