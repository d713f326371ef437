"""The sandbox's privacy ledger: what each grant's noisy answers spent, and the answers themselves.

A noise policy's budget is only a protection if it is refused once spent and if nothing can reset
it, so it lives here, on the owner's side, in a file that outlasts restarts, not in the broker.
The spend is written (reserved) before the noise is drawn; a query that fails before anything is
released gets its reservation back, and one cut off by a crash keeps it spent (fail closed). An
identical plan under the same grant on the same data gets the stored answer back and spends nothing,
so asking 200 times averages nothing away.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from broker.errors import DsbrokerError
from broker.private_files import create_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spends (
    id TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    epsilon REAL NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'refunded')),
    answer BLOB
);
CREATE INDEX IF NOT EXISTS spends_by_policy ON spends (policy_id, state);
CREATE INDEX IF NOT EXISTS spends_by_plan ON spends (policy_id, plan_key, state);
CREATE TRIGGER IF NOT EXISTS spends_no_delete BEFORE DELETE ON spends
BEGIN SELECT RAISE(ABORT, 'the privacy ledger keeps every spend'); END;
"""
# Budgets compare sums of floats: allow for their rounding, never for a whole query.
_TOLERANCE = 1e-9


# Failures that happen before the engine reads any data; only these give the reservation back.
NOTHING_READ = frozenset({"SANDBOX_BUSY"})


class BudgetExhausted(DsbrokerError):
    """Raised when a grant's privacy budget cannot pay for another query."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "PRIVACY_BUDGET_EXHAUSTED"


@dataclass(frozen=True)
class LedgerAnswer:
    """An answer from the ledger: freshly computed or the stored one, and the grant's budget after it."""

    answer: bytes
    repeated: bool
    spent: float


class PrivacyLedger:
    """Spends and stored answers per grant, in SQLite (one file per sandbox)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        create_private(self.path)  # 0600, and so its -wal and -shm
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one writer at a time; the engine runs outside it
        self._plan_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)

    def spent(self, policy_id: str) -> float:
        """Epsilon the grant has spent (reservations included: a crashed query stays spent)."""
        with self._lock:
            return self._spent(policy_id)

    def answer(self, *, policy_id: str, dataset: str, plan_key: str, epsilon: float, budget: float,
               compute: Callable[[], bytes]) -> LedgerAnswer:
        """The stored answer to ``plan_key`` under the grant, or a new one from ``compute`` paid with
        ``epsilon``; raises :class:`BudgetExhausted` when the budget cannot pay."""
        with self._lock:
            plan_lock = self._plan_locks[(policy_id, plan_key)]
        with plan_lock:  # the same plan twice at once: the second waits and gets the first's answer
            with self._lock:
                stored = self._db.execute(
                    "SELECT answer FROM spends WHERE policy_id = ? AND plan_key = ? AND state = 'released'",
                    (policy_id, plan_key)).fetchone()
                if stored is not None:
                    return LedgerAnswer(stored[0], True, self._spent(policy_id))
                spent = self._spent(policy_id)
                if spent + epsilon > budget + _TOLERANCE:
                    raise BudgetExhausted(
                        f"the grant's privacy budget is spent ({spent:g} of {budget:g}; a query needs {epsilon:g})",
                        policy=policy_id, epsilon_spent=f"{spent:g}", epsilon_budget=f"{budget:g}")
                spend_id = uuid.uuid4().hex
                self._db.execute("INSERT INTO spends (id, policy_id, dataset, plan_key, epsilon, at, state) "
                                 "VALUES (?, ?, ?, ?, ?, ?, 'reserved')",
                                 (spend_id, policy_id, dataset, plan_key, epsilon,
                                  dt.datetime.now(dt.timezone.utc).isoformat()))
            try:
                answer = compute()
            except BaseException as error:
                if getattr(error, "reason", None) in NOTHING_READ:
                    with self._lock:  # the engine read nothing: the reservation goes back
                        self._db.execute("UPDATE spends SET state = 'refunded' WHERE id = ?", (spend_id,))
                # Otherwise the reservation stays spent: whether a query fails after the engine read the
                # data (a timeout, too many cells) can depend on the data, so a free refusal would be a
                # noise-free answer, repeatable at no cost.
                raise
            with self._lock:
                self._db.execute("UPDATE spends SET state = 'released', answer = ? WHERE id = ?", (answer, spend_id))
                return LedgerAnswer(answer, False, self._spent(policy_id))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _spent(self, policy_id: str) -> float:
        row = self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM spends WHERE policy_id = ? AND state != 'refunded'",
                               (policy_id,)).fetchone()
        return float(row[0])
