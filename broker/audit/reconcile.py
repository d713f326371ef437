"""Reconciling the broker's access log with a sandbox's execution ledger.

Every plan the sandbox executed must have an allowing DECISION in the broker's log with the same
execution id and plan hash, and every result the broker released from that sandbox must be in the
sandbox's ledger. Anything else means one side ran or released something the other did not see.

The ledger also holds the log's checkpoints the sandbox witnessed (:mod:`sandbox.ledgers.checkpoint_witness`),
out of reach of whoever can write the log's database: the log must still hold, for every witnessed
head, at least that many records with that Merkle root (over the records' recomputed hashes) and the
checkpoint itself; and a checkpoint the sandbox refused as a fork is an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from dsbroker.records.checkpoints import Checkpoint, countersignature_valid, key_id
from dsbroker.records.merkle import MerkleAccumulator
from dsbroker.records.access_record import StoredRecord, record_hash
from dsbroker.records.executions import Execution
from dsbroker.records.witnessed import FORK, WITNESSED, Witnessed


@dataclass(frozen=True)
class Discrepancy:
    """One way the two sides disagree; ``where`` names the log's seq or the ledger's entry."""

    where: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def reconcile(records: Iterable[StoredRecord], executions: Iterable[Execution]) -> list[Discrepancy]:
    """What the access log and the execution ledger disagree on (empty when they agree)."""
    decisions: dict[str, StoredRecord] = {}
    releases: dict[str, StoredRecord] = {}
    for record in records:
        execution_id = record.detail.get("execution_id")
        if not execution_id:
            continue
        if record.event == "query.decision" and record.decision == "allow":
            decisions[execution_id] = record
        elif record.event == "query.result" and record.decision == "released":
            releases[execution_id] = record
    found: list[Discrepancy] = []
    executed: dict[str, Execution] = {}
    sandboxes: set[str] = set()
    for execution in executions:
        where = f"ledger entry {execution.seq}"
        sandboxes.add(execution.sandbox_id)
        if execution.execution_id in executed:
            found.append(Discrepancy(where, "EXECUTED_TWICE", f"execution {execution.execution_id} ran again "
                                     f"(first at ledger entry {executed[execution.execution_id].seq}): a replayed "
                                     "plan"))
            continue
        executed[execution.execution_id] = execution
        decision = decisions.get(execution.execution_id)
        if decision is None:
            found.append(Discrepancy(where, "EXECUTED_WITHOUT_DECISION",
                                     f"the sandbox ran execution {execution.execution_id} (policy "
                                     f"{execution.policy_id}), which no allowing decision in the access log names"))
        elif decision.detail.get("plan_sha256") != execution.plan_sha256:
            found.append(Discrepancy(where, "PLAN_MISMATCH",
                                     f"the sandbox ran a different plan for execution {execution.execution_id} "
                                     f"than the one decided at seq {decision.seq}"))
    for execution_id, release in releases.items():
        # A secure sum names every partition it added ("a,b,c"): each partition's ledger must hold it.
        if sandboxes and not sandboxes & set(str(release.detail.get("sandbox_id", "")).split(",")):
            continue  # released from another sandbox, reconciled against that sandbox's ledger
        if execution_id not in executed:
            found.append(Discrepancy(f"seq {release.seq}", "RELEASED_WITHOUT_EXECUTION",
                                     f"the broker released execution {execution_id}, which the sandbox's ledger "
                                     "does not hold"))
    return found


def check_witnessed(records: Sequence[StoredRecord], checkpoints: Iterable[Checkpoint],
                    entries: Iterable[Witnessed], *,
                    witness_keys: Iterable[ed25519.Ed25519PublicKey] = ()) -> list[Discrepancy]:
    """What the log disagrees on with the checkpoints a sandbox witnessed (``records`` in sequence order).

    With ``witness_keys`` (the sandboxes' witness public keys) each witnessed entry's
    countersignature must verify under one of them, so a ledger copy cannot be forged either."""
    keys = {key_id(key): key for key in witness_keys}
    by_size = {checkpoint.size: checkpoint for checkpoint in checkpoints}
    found: list[Discrepancy] = []
    heads: list[Witnessed] = []
    for entry in entries:
        where = f"witness entry {entry.seq}"
        if entry.kind == FORK:
            found.append(Discrepancy(where, "WITNESS_FORK",
                                     f"the sandbox refused a checkpoint at size {entry.size} (at {entry.at}) that does "
                                     "not extend the checkpoints it witnessed: the log was rolled back or rewritten"))
            continue
        if entry.kind != WITNESSED:
            found.append(Discrepancy(where, "WITNESS_ENTRY_INVALID", f"an entry of unknown kind {entry.kind!r}"))
            continue
        heads.append(entry)
        if keys:
            signed = entry.signed()
            key = keys.get(signed.key_id) if signed else None
            if (key is None or not countersignature_valid(signed, key)
                    or (signed.checkpoint, signed.size, signed.root)
                    != (entry.checkpoint_hash, entry.size, entry.root)):
                found.append(Discrepancy(where, "WITNESS_SIGNATURE_INVALID",
                                         f"the countersignature of the checkpoint at size {entry.size} does not verify "
                                         "under the witness keys given"))
    merkle, position, matching = MerkleAccumulator(), 0, 0
    for head in sorted(heads, key=lambda entry: entry.size):
        where = f"witness entry {head.seq}"
        while merkle.size < head.size and position < len(records):
            merkle.add(record_hash(records[position]))
            position += 1
        if merkle.size < head.size:
            found.append(Discrepancy(where, "WITNESSED_HEAD_MISSING",
                                     f"the sandbox witnessed the log at size {head.size} (at {head.at}), but the log "
                                     f"holds only {merkle.size} records: records {merkle.size + 1}..{head.size} were "
                                     "removed"))
            continue
        if merkle.root() != head.root:
            found.append(Discrepancy(where, "WITNESSED_HEAD_MISMATCH",
                                     f"the log's first {head.size} records are not the ones the sandbox witnessed at "
                                     f"size {head.size} (at {head.at}): records {matching + 1}..{head.size} were "
                                     "rewritten or replaced"))
            continue
        matching = head.size
        kept = by_size.get(head.size)
        if kept is None or kept.hash() != head.checkpoint_hash:
            found.append(Discrepancy(where, "WITNESSED_CHECKPOINT_MISSING",
                                     f"the log no longer holds the checkpoint at size {head.size} that the sandbox "
                                     "witnessed (deleted or replaced)"))
    return found
