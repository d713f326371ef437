"""The access log: one record per access, allowed or refused, chained by hashes, sealed, checkpointed.

- **Durable before the caller moves on.** :meth:`AccessLog.append` returns only once its record is
  committed (the DECISION record is written before a query runs; a failed write refuses the query,
  UNAVAILABLE).
- **Group commit.** One writer thread takes every record waiting and commits them in one
  transaction, so sixteen callers share one fsync instead of queueing for sixteen.
- **Sealed.** The last record of every batch carries this broker's Ed25519 signature over its hash
  (:mod:`broker.access_log.seals`). Before extending the chain the broker checks that its tail is sealed
  by a key it trusts (its own or a peer broker's), and that the records it wrote itself are still
  there; before signing a checkpoint it checks every record since the last one it checked
  (:mod:`broker.access_log.vouched_chain`). Otherwise it raises the alarm and refuses every access
  (UNAVAILABLE ``ACCESS_LOG_TAMPERED``) rather than sign over a record no broker wrote.
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

from typing import Callable, Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.records.checkpoints import Checkpoint, sign_checkpoint
from broker.access_log.store import LogStore, RecordFilter, open_log_store
from dsbroker.records.access_record import (DEFAULT_MAX_SQL_BYTES, GENESIS_HASH, AccessRecord, StoredRecord, bound_text,
                                  record_hash, seal)
from broker.access_log.seals import Sealer, TrustedKeys
from broker.access_log.vouched_chain import VouchedChain
from dsbroker.errors import AccessLogError, AccessLogTampered, DsbrokerError, QuotaError
from dsbroker.database import is_database_error

__all__ = ["AccessLog", "AccessRecord", "GENESIS_HASH", "Quota", "RecordFilter", "StoredRecord", "record_hash",
           "records_written"]
log = logging.getLogger(__name__)

MAX_BATCH = 512
# While a call is being served: the sequence numbers it has written, so the call-audit interceptor
# knows whether the call recorded itself (see broker.access_log.calls).
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
                 on_checkpoint: Callable[[Checkpoint], None] | None = None, read_only: bool = False,
                 on_batch: Callable[[int, float, BaseException | None], None] | None = None) -> None:
        """``signing_key`` seals records and signs checkpoints; without it the log is open for reading only.
        ``peer_keys`` are the other brokers' keys when several write this log. ``on_checkpoint`` hears of
        every checkpoint this broker signs (it must not block: the writer calls it). ``read_only`` (an
        auditor's copy) opens the store so that nothing in it is created, migrated or changed. ``on_batch(records,
        seconds, error)`` hears of every commit (the metrics, the broker's readiness); it must not block, and
        is called outside the write lock."""
        if read_only and signing_key is not None:
            raise ValueError("a read-only access log signs nothing")
        self.location = str(location)
        self.store: LogStore = open_log_store(self.location, read_only=read_only)
        self.signing_key = signing_key
        self._sealer = Sealer(signing_key) if signing_key else None
        self.key_id = self._sealer.key_id if self._sealer else ""
        self.trusted = TrustedKeys([*([signing_key.public_key()] if signing_key else []), *peer_keys])
        self.chain = VouchedChain(self.trusted)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_sql_bytes = max_sql_bytes
        self.on_checkpoint = on_checkpoint
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._wakeup = threading.Condition()
        self._closing = False
        self._committing = False  # a caller (or the writer thread) is committing what waits in the queue
        self._handoff = False  # a caller asked the writer thread to carry on committing
        self._write_lock = threading.Lock()  # the store has one write connection
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
            if self.chain.tampered is not None:
                raise self.chain.refusal()
            self._queue.append(pending)
            lead = not self._committing
            self._committing = True
        if lead:  # nobody is committing: commit here rather than wake a thread for it
            self._drain(max_batches=2)
        pending.done.wait()
        if isinstance(pending.error, DsbrokerError):
            raise self.chain.refusal() if isinstance(pending.error, AccessLogTampered) else pending.error
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
                             subject=f"policies/{quota.grant_id}", grant=quota.grant_id, quota=name, limit=limit)
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
        started = time.perf_counter()
        with self._write_lock:
            self._commit_locked(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started, batch[0].error)

    def _commit_locked(self, batch: list[_Pending]) -> None:
        written: list[tuple[int, str]] = []
        try:
            with self.store.write(synced=any(pending.synced for pending in batch)) as transaction:
                seq, prev = self.chain.tail(transaction)
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
            self.chain.wrote(written)
        except BaseException as error:  # noqa: BLE001 - every waiter must hear of it, whatever it was
            if not is_database_error(error) and not isinstance(error, AccessLogTampered):
                log.exception("the access log's writer failed")
            for pending in batch:
                pending.error = error
                pending.done.set()
            return
        for pending in batch:
            pending.done.set()

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
        if self.signing_key is None or self.chain.tampered is not None or self._appended <= self._last_checkpoint_size:
            return None
        return max(0.01, self.checkpoint_seconds - (time.monotonic() - self._last_checkpoint_time))

    def _checkpoint_due(self) -> bool:
        if self.signing_key is None or self.chain.tampered is not None or self._appended <= self._last_checkpoint_size:
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
        if self.signing_key is None or self.chain.tampered is not None:
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
                size, _ = self.chain.tail(transaction)
                latest = transaction.latest_checkpoint()
                self.chain.check_latest(latest, size)
                if latest is not None and latest.size == size:
                    self._note_checkpoint(size)
                    return latest, False
                root = self.chain.root_for_checkpoint(transaction, size, latest)
                checkpoint = sign_checkpoint(self.signing_key, size=size, root=root,
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

    def record_hashes(self, after: int, upto: int) -> Iterator[str]:
        """The stored hashes of records after..upto, in order (read a page at a time)."""
        return self.store.hashes(after, upto)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        return self.store.checkpoints()

    def alarm(self, message: str) -> None:
        """Refuse every access from now on: a witness found that the log forked from what it witnessed."""
        self.chain.alarm(message)

    @property
    def tampered(self) -> AccessLogTampered | None:
        """The finding that made the log refuse accesses, if one did."""
        return self.chain.tampered

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
