"""The sandbox's execution ledger: every plan it ran, written before the engine runs.

The broker's access log says what the broker decided; this ledger says what the owner's side
actually executed: which plan (by hash), under which policy, when, for which decision. An auditor
reconciles the two (``dsbroker audit reconcile``): a plan executed here with no allowing decision
in the broker's log, or a release in the log that this ledger never executed, is a finding.
The ledger is append-only and hash-chained like the access log; if an entry cannot be written the
plan is refused (UNAVAILABLE), so nothing runs unrecorded.

Execution ids are single-use here: a plan whose id the ledger already holds is refused
(ALREADY_EXISTS ``PLAN_REPLAYED``) before it runs, across restarts, so a broker cannot run one
allowed decision twice. (Each partition of a secure sum keeps its own ledger, so the one plan of a
secure sum runs once in each.)
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from dsbroker.database import Durability, open_sqlite

from dsbroker.records.access_record import GENESIS_HASH
from dsbroker.errors import ExecutionLedgerError, PlanReplayed
from dsbroker.records.executions import Execution, execution_hash, plan_digest, verify_executions
from sandbox.v1 import sandbox_service_pb2 as pb

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    at TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    plan_sha256 TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_id ON executions (execution_id);
CREATE TRIGGER IF NOT EXISTS executions_no_update BEFORE UPDATE ON executions
BEGIN SELECT RAISE(ABORT, 'the execution ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS executions_no_delete BEFORE DELETE ON executions
BEGIN SELECT RAISE(ABORT, 'the execution ledger is append-only'); END;
"""


# A separate statement: a ledger written before ids were single-use may hold a repeat, and then only
# the check in ``record`` (which always runs) holds.
_UNIQUE_IDS = "CREATE UNIQUE INDEX IF NOT EXISTS executions_unique_id ON executions (execution_id)"


class ExecutionLedger:
    """An append-only, hash-chained list of executed plans in one SQLite file."""

    def __init__(self, path: str | Path, *, sandbox_id: str = "") -> None:
        self.path = Path(path)
        self.sandbox_id = sandbox_id
        self._lock = threading.Lock()
        # Committed entries survive a crash of the sandbox at once; after a power cut the last few may be
        # lost, and reconcile then reports their releases as never executed: loud, never silent.
        # Flushing every entry would add a disk flush to every query.
        self._db = open_sqlite(self.path, durability=Durability.PROCESS_CRASH, autocommit=True)
        self._db.executescript(_SCHEMA)
        try:
            self._db.execute(_UNIQUE_IDS)
        except sqlite3.IntegrityError:
            log.warning("%s holds a repeated execution id from before ids were single-use; new repeats are still "
                        "refused", self.path)

    def record(self, plan: pb.Plan, *, request_id: str, now: dt.datetime | None = None) -> Execution:
        """Write, durably, that ``plan`` is about to run; raises ExecutionLedgerError when it cannot, and
        PlanReplayed when its execution id is in the ledger already (nothing is written then)."""
        at = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if self._db.execute("SELECT 1 FROM executions WHERE execution_id = ?", (plan.execution_id,)).fetchone():
                    self._db.execute("ROLLBACK")
                    raise PlanReplayed(f"execution {plan.execution_id[:64]!r} has run here before; each execution "
                                       "id runs once", policy=plan.policy_id, execution_id=plan.execution_id[:64])
                last = self._db.execute("SELECT seq, hash FROM executions ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                execution = Execution(seq=seq, execution_id=plan.execution_id, at=at, sandbox_id=self.sandbox_id,
                                      plan_sha256=plan_digest(plan), policy_id=plan.policy_id,
                                      policy_version=plan.policy_version, dataset=plan.dataset,
                                      request_id=request_id, prev_hash=prev)
                execution = Execution(**{**asdict(execution), "hash": execution_hash(execution)})
                values = asdict(execution)
                self._db.execute(f"INSERT INTO executions ({', '.join(values)}) VALUES "
                                 f"({', '.join('?' * len(values))})", tuple(values.values()))
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise ExecutionLedgerError(f"the sandbox could not record the plan in its execution ledger "
                                           f"({type(error).__name__}); it was not run") from None
        return execution

    def executions(self) -> list[Execution]:
        """Every entry, oldest first."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM executions ORDER BY seq")
            names = [d[0] for d in cursor.description]
            return [Execution(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def verify(self) -> list[str]:
        """Problems with the ledger's own chain, first bad entry first."""
        return verify_executions(self.executions())

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
