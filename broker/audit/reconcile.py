"""Reconciling the broker's access log with a sandbox's execution ledger.

Every plan the sandbox executed must have an allowing DECISION in the broker's log with the same
execution id and plan hash, and every result the broker released from that sandbox must be in the
sandbox's ledger. Anything else means one side ran or released something the other did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from broker.audit.records import StoredRecord
from sandbox.execution_ledger import Execution


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
