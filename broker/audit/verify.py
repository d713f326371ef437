"""Verifying the access log: the chain, the signed checkpoints, and decisions left without a release.

Each problem names the first sequence number where the log stops being what the broker wrote:

- a record whose contents do not match its hash (edited), whose sequence number skips (deleted),
  or that does not name the record before it (inserted, reordered);
- a checkpoint whose signature does not verify under the pinned key (forged), whose chain of
  previous checkpoints is broken, or whose Merkle root does not match the records it covers
  (records rewritten consistently after the checkpoint was signed: the first bad record lies after
  the last checkpoint that still matches, and the problem names that range);
- a log shorter than a checkpoint says it was (truncated), including a checkpoint an auditor kept.

Allowed decisions with no release record are warnings, not problems: the broker stopped between
the two (a crash), or the query is still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.audit.checkpoints import Checkpoint, key_id, signature_valid
from broker.audit.log_store import LogStore
from broker.audit.merkle import MerkleAccumulator
from broker.audit.records import GENESIS_HASH, record_hash

PAGE = 10_000


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth a look) in the log, at sequence number ``seq``."""

    seq: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.message}"


@dataclass
class Report:
    """What verification found."""

    records: int = 0
    checkpoints: int = 0
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        """No problems (warnings allowed)."""
        return not self.problems


def verify_log(store: LogStore, *, public_key: ed25519.Ed25519PublicKey | None = None,
               kept_checkpoints: Iterable[Checkpoint] = ()) -> Report:
    """Check every record and checkpoint in ``store``; ``kept_checkpoints`` are copies an auditor holds."""
    report = Report()
    stored = store.checkpoints()
    report.checkpoints = len(stored)
    _check_checkpoint_chain(stored, public_key, report)
    kept = list(kept_checkpoints)
    for checkpoint in kept:
        if public_key is not None and not signature_valid(checkpoint, public_key):
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_FORGED",
                                           f"the kept checkpoint at size {checkpoint.size} is not signed by the "
                                           "pinned key"))
    # Roots to compare as the records stream past: the log's own checkpoints and the kept copies.
    expected: dict[int, list[tuple[str, Checkpoint]]] = {}
    for origin, checkpoints in (("the log's checkpoint", stored), ("the kept checkpoint", kept)):
        for checkpoint in checkpoints:
            expected.setdefault(checkpoint.size, []).append((origin, checkpoint))

    merkle = MerkleAccumulator()
    expected_seq, prev, last_matching = 1, GENESIS_HASH, 0
    open_decisions: set[int] = set()
    after = 0
    while True:
        page = store.records(after=after, limit=PAGE)
        if not page:
            break
        for record in page:
            if record.seq != expected_seq:
                report.problems.append(Finding(expected_seq, "RECORDS_MISSING",
                                               f"records {expected_seq}..{record.seq - 1} are missing (deleted)"
                                               if record.seq > expected_seq else
                                               f"record {record.seq} is out of order"))
            if record.prev_hash != prev:
                report.problems.append(Finding(record.seq, "CHAIN_BROKEN",
                                               "does not follow the record before it (inserted, reordered or "
                                               "the record before it was removed)"))
            if record_hash(record) != record.hash:
                report.problems.append(Finding(record.seq, "RECORD_ALTERED",
                                               "contents do not match its hash (record altered)"))
            if record.event == "query.decision" and record.decision == "allow":
                open_decisions.add(record.seq)
            elif record.event == "query.result":
                open_decisions.discard(int(record.detail.get("decision_seq", 0) or 0))
            merkle.add(record.hash)
            for origin, checkpoint in expected.pop(merkle.size, ()):
                if checkpoint.root == merkle.root():
                    last_matching = max(last_matching, merkle.size)
                else:
                    # A broken link inside the range is the first bad record; without one, the records
                    # were rewritten consistently and only the range is known.
                    inside = [p.seq for p in report.problems if p.seq > last_matching]
                    report.problems.append(Finding(
                        min(inside, default=last_matching + 1), "CHECKPOINT_MISMATCH",
                        f"records {last_matching + 1}..{checkpoint.size} are not the records {origin} at size "
                        f"{checkpoint.size} was signed over (rewritten after it was signed)"))
            expected_seq, prev = record.seq + 1, record.hash
        report.records += len(page)
        after = page[-1].seq
    for size, entries in sorted(expected.items()):
        for origin, _checkpoint in entries:
            report.problems.append(Finding(merkle.size + 1, "LOG_TRUNCATED",
                                           f"the log ends at {merkle.size} records but {origin} was signed at "
                                           f"size {size} (records removed from the end)"))
    for seq in sorted(open_decisions):
        report.warnings.append(Finding(seq, "DECISION_WITHOUT_RELEASE",
                                       "an allowed query has no release record (the broker stopped before "
                                       "it, or the query is still running)"))
    covered = max((c.size for c in stored), default=0)
    if report.records > covered:
        report.warnings.append(Finding(covered + 1, "NOT_YET_CHECKPOINTED",
                                       f"records {covered + 1}..{report.records} are not yet covered by a "
                                       "signed checkpoint"))
    if public_key is None and (stored or kept):
        report.warnings.append(Finding(0, "SIGNATURES_NOT_CHECKED",
                                       "checkpoint signatures were not checked: no pinned key given"))
    report.problems.sort(key=lambda finding: (finding.seq, finding.kind == "CHECKPOINT_MISMATCH"))
    return report


def _check_checkpoint_chain(checkpoints: list[Checkpoint], public_key: ed25519.Ed25519PublicKey | None,
                            report: Report) -> None:
    prev_hash, prev_size = GENESIS_HASH, 0
    pinned_id = key_id(public_key) if public_key is not None else None
    for checkpoint in checkpoints:
        if public_key is not None and not signature_valid(checkpoint, public_key):
            why = "a different key" if checkpoint.key_id != pinned_id else "nobody who holds the pinned key"
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_FORGED",
                                           f"the checkpoint at size {checkpoint.size} was signed by {why} "
                                           "(forged or altered)"))
        if checkpoint.prev != prev_hash or checkpoint.size <= prev_size:
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_CHAIN_BROKEN",
                                           f"the checkpoint at size {checkpoint.size} does not follow the "
                                           "checkpoint before it (one was removed, inserted or altered)"))
        prev_hash, prev_size = checkpoint.hash(), checkpoint.size
