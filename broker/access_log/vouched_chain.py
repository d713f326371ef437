"""What one broker can vouch for in the access log, and the alarm when it finds something it cannot.

A broker chains each batch onto the log's last record and signs checkpoints over the records, so
it must never do either over a record no trusted broker wrote. :class:`VouchedChain` keeps what
that takes: the tail as this broker last wrote or checked it, the hashes of the records it wrote
since its last checkpoint, and how far it has checked the chain (with the Merkle tree over it).

- **Before each batch** (:meth:`VouchedChain.tail`): the tail is the one this broker last wrote or
  checked, which costs nothing; or it hashes to what it stores and carries a seal by a trusted key
  (this broker's or a peer's), the records this broker wrote are still there, and no checkpoint
  claims more records than the log holds.
- **Before each checkpoint** (:meth:`VouchedChain.check_latest`, :meth:`VouchedChain.root_for_checkpoint`):
  every record since the
  last check follows the one before and is either one this broker wrote, with the hash it wrote,
  or hashes to what it stores within a run that ends in a trusted seal; the newest checkpoint is
  signed by a trusted key, and the records it covers still have its root.

Anything else raises the alarm once, in the broker's own log, and from then on every access is
refused (UNAVAILABLE ``ACCESS_LOG_TAMPERED``): an operator keeps the log for the auditors and starts
a new one. Records written before seals existed are trusted only as far as a trusted checkpoint
that still matches covers them.
"""

from __future__ import annotations

import logging

from dsbroker.records.checkpoints import Checkpoint
from broker.access_log.store import WriteTransaction
from dsbroker.records.merkle import MerkleAccumulator
from dsbroker.records.access_record import GENESIS_HASH, StoredRecord, record_hash
from broker.access_log.seals import TrustedKeys
from dsbroker.errors import AccessLogTampered

log = logging.getLogger("broker.access_log.log")


class VouchedChain:
    """The part of the log one broker has written or checked, and whether it was found tampered with."""

    def __init__(self, trusted: TrustedKeys) -> None:
        self.trusted = trusted
        self._tampered: AccessLogTampered | None = None  # the first finding; once set, every access is refused
        self._tail_ok: tuple[int, str] | None = None  # the tail as this broker last wrote or checked it
        self._last_own: tuple[int, str] | None = None  # the last record this broker wrote
        self._own: dict[int, str] = {}  # seq -> hash of what this broker wrote since it last checked the chain
        self._verified: tuple[int, str] = (0, GENESIS_HASH)  # the chain is checked up to here
        self._merkle = MerkleAccumulator()  # over exactly the checked records

    # -- the alarm -------------------------------------------------------------------------------

    @property
    def tampered(self) -> AccessLogTampered | None:
        """The finding that made the log refuse accesses, if one did."""
        return self._tampered

    def refusal(self) -> AccessLogTampered:
        """What a caller hears once the log was found tampered with (no record's contents in it)."""
        seq = self._tampered.metadata.get("seq", "0") if self._tampered else "0"
        return AccessLogTampered(f"the access log holds records no broker wrote, or lost records a broker wrote "
                                 f"(seq {seq}); the access is refused until an operator looks", seq=seq)

    def alarm(self, message: str, *, seq: int = 0) -> None:
        """Raise the alarm (once, in the broker's own log) and refuse every access from now on."""
        if self._tampered is None:
            log.critical("ALARM: the access log was tampered with: %s. Every access is refused until an operator "
                         "looks (keep the log for the auditors and start a new one).", message)
            self._tampered = AccessLogTampered(message, seq=seq)

    def _refuse(self, message: str, *, seq: int) -> None:
        self.alarm(message, seq=seq)
        raise self.refusal()

    # -- before a batch --------------------------------------------------------------------------

    def tail(self, transaction: WriteTransaction) -> tuple[int, str]:
        """The (seq, hash) to chain onto, once it is known to be one a trusted broker wrote; raises
        AccessLogTampered otherwise. Called inside the write transaction, so on PostgreSQL it is the
        tail as re-read under the advisory lock that several brokers share."""
        if self._tampered is not None:
            raise self.refusal()
        seq, tail_hash = transaction.tail()
        if self._tail_ok == (seq, tail_hash):
            return seq, tail_hash  # what this broker wrote or checked last: nobody wrote since
        if self._last_own is not None:
            own_seq, own_hash = self._last_own
            if seq < own_seq or transaction.hash_at(own_seq) != own_hash:
                self._refuse(f"record {own_seq}, which this broker wrote, is gone or replaced (the log now ends "
                             f"at {seq})", seq=min(own_seq, seq + 1))
        latest = transaction.latest_checkpoint()
        if latest is not None and seq < latest.size:
            self._refuse(f"the log ends at {seq} records but its checkpoint at size {latest.size} covers more "
                         "(records removed from the end)", seq=seq + 1)
        if seq > 0:
            record = transaction.record(seq)
            if record_hash(record) != record.hash:
                self._refuse(f"record {seq}, the log's last, does not match its hash", seq=seq)
            if record.seal:
                if not self.trusted.sealed(record):
                    self._refuse(f"record {seq}, the log's last, carries a seal that no trusted broker key made "
                                 f"(key id {record.seal_key_id or 'none'})", seq=seq)
            elif not self._legacy_tail_covered(transaction, record, latest):
                self._refuse(f"record {seq}, the log's last, is not sealed: no broker wrote it", seq=seq)
        self._tail_ok = (seq, tail_hash)
        return seq, tail_hash

    def wrote(self, written: list[tuple[int, str]]) -> None:
        """This broker committed these (seq, hash), in order."""
        self._own.update(written)
        self._tail_ok = self._last_own = written[-1]

    def _legacy_tail_covered(self, transaction: WriteTransaction, record: StoredRecord,
                             latest: Checkpoint | None) -> bool:
        """Whether an unsealed tail ends a log written before seals and is exactly covered by a trusted
        checkpoint whose root still matches (a broker that stopped cleanly always left one)."""
        if (record.sql_bytes is not None or latest is None or latest.size != record.seq
                or not self.trusted.signed(latest)):
            return False
        if self._verified[0] < latest.size:
            self._catch_up(transaction, latest)
        return True

    # -- before a checkpoint ---------------------------------------------------------------------

    def check_latest(self, latest: Checkpoint | None, size: int) -> None:
        """The newest checkpoint must be signed by a trusted key and cover no more than the ``size``
        records the log holds; raises AccessLogTampered otherwise."""
        if latest is not None and not self.trusted.signed(latest):
            self._refuse(f"the newest checkpoint (size {latest.size}) is not signed by a trusted broker key",
                         seq=latest.size)
        if latest is not None and latest.size > size:
            self._refuse(f"the log ends at {size} records but its checkpoint at size {latest.size} covers more "
                         "(records removed from the end)", seq=size + 1)

    def root_for_checkpoint(self, transaction: WriteTransaction, size: int, latest: Checkpoint | None) -> str:
        """The Merkle root over the first ``size`` records, once every one of them is checked (see the
        module's docstring); raises AccessLogTampered otherwise. ``latest`` is the newest checkpoint,
        already passed by :meth:`check_latest`."""
        if latest is not None and self._verified[0] < latest.size:
            self._catch_up(transaction, latest)
        if self._verified[0] > size:
            self._refuse(f"the log ends at {size} records, before the {self._verified[0]} this broker checked",
                         seq=size + 1)
        self._check_since(transaction, size)
        return self._merkle.root()

    def _catch_up(self, transaction: WriteTransaction, checkpoint: Checkpoint) -> None:
        """Extend the checked prefix over a trusted ``checkpoint``: the stored hashes must have its root."""
        hashes = transaction.hashes(self._verified[0], checkpoint.size)
        self._merkle.extend(hashes)
        if self._merkle.size != checkpoint.size or self._merkle.root() != checkpoint.root:
            self._refuse(f"the records up to the checkpoint at size {checkpoint.size} are not the ones it was signed "
                         "over", seq=checkpoint.size)
        self._verified = (checkpoint.size, hashes[-1] if hashes else self._verified[1])

    def _check_since(self, transaction: WriteTransaction, size: int) -> None:
        """Check every record after the checked prefix up to ``size``, and extend the tree over them."""
        after, prev = self._verified
        rows = transaction.chain(after, size)
        foreign = [seq for seq, _prev, digest, _key, _seal in rows if self._own.get(seq) != digest]
        # Records this broker did not write (a peer's, or its own from before a restart) are read whole.
        whole = {r.seq: r for r in transaction.records(foreign[0] - 1, foreign[-1])} if foreign else {}
        expected, run_start = after + 1, None
        for seq, prev_hash, digest, _key, _seal in rows:
            if seq != expected or prev_hash != prev:
                self._refuse(f"record {expected} does not follow the record before it", seq=expected)
            if seq in self._own:
                if self._own[seq] != digest:
                    self._refuse(f"record {seq} is not the record this broker wrote there", seq=seq)
                if run_start is not None:
                    self._refuse(f"records {run_start}..{seq - 1} are not sealed by any trusted broker", seq=run_start)
            else:
                record = whole[seq]
                if record_hash(record) != digest:
                    self._refuse(f"record {seq} does not match its hash", seq=seq)
                if self.trusted.sealed(record):
                    run_start = None
                elif run_start is None:
                    run_start = seq
            expected, prev = seq + 1, digest
        if run_start is not None or expected != size + 1:
            self._refuse(f"records {run_start or expected}..{size} are not sealed by any trusted broker",
                         seq=run_start or expected)
        self._merkle.extend(digest for _seq, _prev, digest, _key, _seal in rows)
        self._verified = (size, prev)
        for seq in [seq for seq in self._own if seq <= size]:
            del self._own[seq]
