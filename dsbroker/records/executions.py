"""One entry of a sandbox's execution ledger, and the plan digest the broker's DECISION record names too.

The sandbox writes these (sandbox.ledgers.executions); an auditor's reconciliation reads them beside the
broker's access log (broker.audit.reconcile), so the format is the core's, shared by both.
"""

from __future__ import annotations

import hashlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from dsbroker.database import open_sqlite_read_only
from dsbroker.records.access_record import canonical_json
from dsbroker.records.chain import chain_problems, entry_digest, read_entries


@dataclass(frozen=True)
class Execution:
    """One plan the sandbox executed."""

    seq: int
    execution_id: str
    at: str
    sandbox_id: str
    plan_sha256: str
    policy_id: str
    policy_version: int
    dataset: str
    request_id: str
    prev_hash: str
    hash: str = ""


class Plan(Protocol):
    """What :func:`plan_digest` reads of a plan (the sandbox's ExecutePlanRequest)."""

    dataset: str
    sql: str
    policy_id: str
    policy_version: int
    max_rows: int


def plan_digest(plan: Plan) -> str:
    """The hash of what a plan runs (dataset, SQL, policy and version, row cap); the broker logs the same."""
    body = {"dataset": plan.dataset, "sql": plan.sql, "policy_id": plan.policy_id,
            "policy_version": plan.policy_version, "max_rows": plan.max_rows}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def execution_hash(execution: Execution) -> str:
    """SHA-256 over every field but the hash."""
    return entry_digest(execution)


def read_executions(path: str | Path) -> list[Execution]:
    """Every entry of the execution ledger in ``path``, oldest first, read without changing the file;
    LedgerUnreadable when it has no executions table or its columns are not an entry's."""
    with closing(open_sqlite_read_only(path)) as db:
        return read_entries(db, "executions", Execution)


def verify_executions(entries: Sequence[Execution]) -> list[str]:
    """Problems with the ledger's own chain, first bad entry first."""
    return chain_problems(entries, execution_hash, "ledger entry")
