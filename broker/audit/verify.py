"""Verifying the access log: the chain, the seals, the signed checkpoints, and decisions left without a release.

Each problem names the first sequence number where the log stops being what the broker wrote:

- a record whose contents do not match its hash (edited), whose sequence number skips (deleted),
  or that does not name the record before it (inserted, reordered);
- a record that no seal by a pinned key covers (written by someone who holds no broker key): each
  batch's last record is sealed, and through the chain its seal covers the records before it back
  to the previous seal or break. Records written before seals existed are covered instead by a
  checkpoint signed by a pinned key whose root they still match;
- a checkpoint whose signature does not verify under a pinned key (forged), whose chain of
  previous checkpoints is broken, or whose Merkle root does not match the records it covers
  (records rewritten consistently after the checkpoint was signed: the first bad record lies after
  the last checkpoint that still matches, and the problem names that range);
- a log shorter than a checkpoint says it was (truncated), including a checkpoint an auditor kept.

Without a pinned key nothing signed can be checked: the report says so (``verified`` is false) and
the CLI exits non-zero. Allowed decisions with no release record are warnings, not problems: the
broker stopped between the two (a crash), or the query is still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.records.checkpoints import Checkpoint
from dsbroker.records.merkle import MerkleAccumulator
from dsbroker.records.access_record import GENESIS_HASH, record_hash
from broker.access_log.seals import TrustedKeys

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
    verified: bool = False  # seals and signatures were checked against pinned keys

    @property
    def intact(self) -> bool:
        """No problems (warnings allowed); only worth trusting when ``verified``."""
        return not self.problems


class _Coverage:
    """Which records a seal by a pinned key covers: runs of records since the last seal or break."""

    def __init__(self) -> None:
        self.run_start: int | None = None
        self.uncovered: list[tuple[int, int]] = []  # (first, last) of each run no seal closed
        self.legacy_end = 0  # the last record of the prefix written before seals

    def add(self, seq: int, *, sealed: bool, legacy: bool) -> None:
        if legacy and self.legacy_end == seq - 1:
            self.legacy_end = seq
        if self.run_start is None:
            self.run_start = seq
        if sealed:
            self.run_start = None

    def cut(self, before: int) -> None:
        """The chain breaks before record ``before``: a later seal cannot cover the run before it."""
        if self.run_start is not None and self.run_start < before:
            self.uncovered.append((self.run_start, before - 1))
        self.run_start = None

    def findings(self, last_record: int, checkpointed: int) -> list[Finding]:
        """A problem per uncovered run, less the old records a trusted, matching checkpoint covers."""
        self.cut(last_record + 1)
        found = []
        for first, last in self.uncovered:
            first = max(first, min(self.legacy_end, checkpointed) + 1)
            if first <= last:
                found.append(Finding(first, "RECORD_UNSEALED", f"records {first}..{last} are not sealed by a pinned "
                                     "broker key: no broker you trust wrote them (inserted into the database)"))
        return found


def verify_log(store, *, public_keys: Iterable[ed25519.Ed25519PublicKey] = (),
               kept_checkpoints: Iterable[Checkpoint] = ()) -> Report:
    """Check every record and checkpoint in ``store`` (a LogStore, or anything with ``records`` and
    ``checkpoints``) against the broker keys the auditor pinned; ``kept_checkpoints`` are copies an
    auditor holds."""
    trusted = TrustedKeys(public_keys)
    report = Report(verified=bool(trusted))
    guards = getattr(store, "missing_append_only_guards", None)  # a store read directly, not over gRPC
    missing = guards() if guards is not None else None
    if missing:
        report.problems.append(Finding(0, "APPEND_ONLY_GUARD_MISSING", f"the log's append-only triggers are "
                                       f"missing ({', '.join(missing)}): its rows could be changed in place; "
                                       "compare it with a copy taken earlier"))
    stored = store.checkpoints()
    report.checkpoints = len(stored)
    _check_checkpoint_chain(stored, trusted, report)
    kept = list(kept_checkpoints)
    _check_kept_checkpoints(kept, trusted, report)
    expected = _expected_roots(stored, kept)

    merkle = MerkleAccumulator()
    coverage = _Coverage()
    expected_seq, prev, last_matching, trusted_matching = 1, GENESIS_HASH, 0, 0
    mismatches: list[tuple[int, int, str]] = []  # (first, last, origin) of ranges a checkpoint no longer matches
    open_decisions: set[int] = set()
    after = 0
    while True:
        page = store.records(after=after, limit=PAGE)
        if not page:
            break
        for record in page:
            problems = _link_problems(record, expected_seq, prev)
            report.problems += problems
            if problems:
                coverage.cut(record.seq)
            altered = any(problem.kind == "RECORD_ALTERED" for problem in problems)
            coverage.add(record.seq, sealed=not altered and trusted.sealed(record),
                         legacy=record.sql_bytes is None and not record.seal)
            _track_decision(record, open_decisions)
            merkle.add(record.hash)
            for origin, checkpoint in expected.pop(merkle.size, ()):
                if checkpoint.root == merkle.root():
                    last_matching = max(last_matching, merkle.size)
                    if trusted.signed(checkpoint):
                        trusted_matching = max(trusted_matching, merkle.size)
                else:
                    mismatches.append((last_matching + 1, checkpoint.size, origin))
            expected_seq, prev = record.seq + 1, record.hash
        report.records += len(page)
        after = page[-1].seq
    if trusted:
        report.problems += coverage.findings(expected_seq - 1, trusted_matching)
    report.problems += _mismatch_findings(report.problems, mismatches)
    report.problems += _truncation_findings(expected, merkle.size)
    report.warnings += _warnings(open_decisions, stored, report.records, trusted)
    report.problems.sort(key=lambda finding: (finding.seq, finding.kind == "CHECKPOINT_MISMATCH"))
    return report


def _check_kept_checkpoints(kept: list[Checkpoint], trusted: TrustedKeys, report: Report) -> None:
    for checkpoint in kept:
        if trusted and not trusted.signed(checkpoint):
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_FORGED",
                                           f"the kept checkpoint at size {checkpoint.size} is not signed by a "
                                           "pinned key"))


def _expected_roots(stored: list[Checkpoint], kept: list[Checkpoint]) -> dict[int, list[tuple[str, Checkpoint]]]:
    """Roots to compare as the records stream past, by size: the log's own checkpoints and the kept copies."""
    expected: dict[int, list[tuple[str, Checkpoint]]] = {}
    for origin, checkpoints in (("the log's checkpoint", stored), ("the kept checkpoint", kept)):
        for checkpoint in checkpoints:
            expected.setdefault(checkpoint.size, []).append((origin, checkpoint))
    return expected


def _link_problems(record, expected_seq: int, prev: str) -> list[Finding]:
    """What is wrong with ``record`` where ``expected_seq`` following ``prev`` should be: missing records
    before it, a broken chain, contents that do not match its hash."""
    problems = []
    if record.seq != expected_seq:
        problems.append(Finding(expected_seq, "RECORDS_MISSING",
                                f"records {expected_seq}..{record.seq - 1} are missing (deleted)"
                                if record.seq > expected_seq else
                                f"record {record.seq} is out of order"))
    if record.prev_hash != prev:
        problems.append(Finding(record.seq, "CHAIN_BROKEN",
                                "does not follow the record before it (inserted, reordered or "
                                "the record before it was removed)"))
    if record_hash(record) != record.hash:
        problems.append(Finding(record.seq, "RECORD_ALTERED", "contents do not match its hash (record altered)"))
    return problems


def _track_decision(record, open_decisions: set[int]) -> None:
    """An allowed decision opens until its release record names it."""
    if record.event == "query.decision" and record.decision == "allow":
        open_decisions.add(record.seq)
    elif record.event == "query.result":
        open_decisions.discard(int(record.detail.get("decision_seq", 0) or 0))


def _mismatch_findings(problems: list[Finding], mismatches: list[tuple[int, int, str]]) -> list[Finding]:
    found = []
    for first, last, origin in mismatches:
        # A broken link or an unsealed record inside the range is the first bad record; without one,
        # the records were rewritten consistently and only the range is known.
        inside = [p.seq for p in problems if first <= p.seq <= last and p.kind != "CHECKPOINT_MISMATCH"]
        found.append(Finding(min(inside, default=first), "CHECKPOINT_MISMATCH",
                             f"records {first}..{last} are not the records {origin} at size {last} was "
                             "signed over (rewritten after it was signed)"))
    return found


def _truncation_findings(unmatched: dict[int, list[tuple[str, Checkpoint]]], records: int) -> list[Finding]:
    """A checkpoint the walk never reached: the log ends before the size it was signed at."""
    return [Finding(records + 1, "LOG_TRUNCATED", f"the log ends at {records} records but {origin} was signed at "
                    f"size {size} (records removed from the end)")
            for size, entries in sorted(unmatched.items()) for origin, _checkpoint in entries]


def _warnings(open_decisions: set[int], stored: list[Checkpoint], records: int, trusted: TrustedKeys) -> list[Finding]:
    warnings = [Finding(seq, "DECISION_WITHOUT_RELEASE", "an allowed query has no release record (the broker "
                        "stopped before it, or the query is still running)") for seq in sorted(open_decisions)]
    covered = max((c.size for c in stored), default=0)
    if records > covered:
        warnings.append(Finding(covered + 1, "NOT_YET_CHECKPOINTED",
                                f"records {covered + 1}..{records} are not yet covered by a signed checkpoint"))
    if not trusted:
        warnings.append(Finding(0, "SIGNATURES_NOT_CHECKED",
                                "seals and checkpoint signatures were not checked: no pinned key given"))
    return warnings


def _check_checkpoint_chain(checkpoints: list[Checkpoint], trusted: TrustedKeys, report: Report) -> None:
    prev_hash, prev_size = GENESIS_HASH, 0
    for checkpoint in checkpoints:
        if trusted and not trusted.signed(checkpoint):
            why = "a different key (one you did not pin)" if checkpoint.key_id not in trusted.by_id else \
                "nobody who holds the pinned key"
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_FORGED",
                                           f"the checkpoint at size {checkpoint.size} was signed by {why} "
                                           "(forged or altered)"))
        if checkpoint.prev != prev_hash or checkpoint.size <= prev_size:
            report.problems.append(Finding(checkpoint.size, "CHECKPOINT_CHAIN_BROKEN",
                                           f"the checkpoint at size {checkpoint.size} does not follow the "
                                           "checkpoint before it (one was removed, inserted or altered)"))
        prev_hash, prev_size = checkpoint.hash(), checkpoint.size
