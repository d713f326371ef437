"""The sandbox's privacy ledger: what each grant's noisy answers spent, and the answers themselves.

A noise policy's budget is only a protection if it is refused once spent and if nothing can reset
it, so it lives here, on the owner's side, in a file that outlasts restarts, not in the broker.

The budget is the dataset's: two grants on one dataset answer about the same taxpayers, so what they
spend adds up in each taxpayer's loss. Every spend counts against the dataset's whole budget (the
owner's ``noise_budgets`` setting) and against its grant's ``budget``, which is that grant's share of
it: a query is refused when either cannot pay (``PRIVACY_BUDGET_EXHAUSTED`` for the share,
``DATASET_BUDGET_EXHAUSTED`` for the dataset). Both are checked and the spend reserved in one
transaction under one lock, so two grants' queries at once cannot both take the dataset's last epsilon.
A dataset the owner gave no budget has the asking grant's own budget as its whole: each spend then
keeps the dataset's total within a budget the owner signed, so all grants together never spend more
than the largest of them, and a dataset with one noise grant is kept exactly as before. A grant cannot
leave the dataset's budget or narrow its scope (the budget is the owner's, set on the sandbox; a
narrower scope, were one needed, would be an owner's setting too, never a grant's field).
The spend is written (reserved) before the noise is drawn; a query that fails before anything is
released gets its reservation back, and one cut off by a crash keeps it spent (fail closed). An
identical plan under the same grant on the same data gets the stored answer back and spends nothing,
so asking 200 times averages nothing away.

Someone who can write the file but holds no key must not be able to give a budget back. Every spend
is sealed with an HMAC under the ledger's own key (``<ledger>.key``, 0600, made on first start):
``link`` covers what a spend is (its sequence number, grant, plan, epsilon and time) and the link
before it, so no spend can be altered, moved or taken out of the middle; ``seal`` covers the link,
the state and the stored answer, so no state can be set back to refunded and no answer swapped. The
whole chain is checked on start, every spend of a grant's dataset before each of its noisy answers
(another grant's spend given back would free the dataset's budget), and the number of spends of a
grant or a dataset never goes down while the sandbox runs. A ledger that fails any of these answers
no noise policy again (FAILED_PRECONDITION ``PRIVACY_LEDGER_TAMPERED``) until the owner restores it.
What a key cannot show is the newest spends cut off while the sandbox was stopped: the execution
ledger and the broker's log still hold those answers (``dsbroker audit reconcile``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

from dsbroker.database import Durability, open_sqlite
from dsbroker.errors import BudgetExhausted, ConfigError, DatasetBudgetExhausted, LedgerTampered
from dsbroker.private_files import write_private

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spends (
    id TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    epsilon REAL NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'refunded')),
    answer BLOB,
    seq INTEGER,
    link TEXT,
    seal TEXT
);
CREATE INDEX IF NOT EXISTS spends_by_policy ON spends (policy_id, state);
CREATE INDEX IF NOT EXISTS spends_by_plan ON spends (policy_id, plan_key, state);
CREATE INDEX IF NOT EXISTS spends_by_dataset ON spends (dataset, state);
CREATE TRIGGER IF NOT EXISTS spends_no_delete BEFORE DELETE ON spends
BEGIN SELECT RAISE(ABORT, 'the privacy ledger keeps every spend'); END;
"""
# Budgets compare sums of floats: allow for their rounding, never for a whole query.
_TOLERANCE = 1e-9


# Failures that happen before the engine reads any data; only these give the reservation back.
NOTHING_READ = frozenset({"SANDBOX_BUSY"})


@dataclass(frozen=True)
class LedgerAnswer:
    """An answer from the ledger: freshly computed or the stored one, and the grant's and the dataset's
    spends after it (``spent`` is the grant's, ``dataset_spent`` of ``dataset_budget`` the dataset's)."""

    answer: bytes
    repeated: bool
    spent: float
    dataset_spent: float = 0.0
    dataset_budget: float = 0.0


class PrivacyLedger:
    """Spends and stored answers per grant, counted against each dataset's budget, in SQLite (one file per
    sandbox). ``dataset_budgets`` are the owner's: dataset -> its whole epsilon."""

    def __init__(self, path: str | Path, *, key_path: str | Path | None = None,
                 dataset_budgets: Mapping[str, float] | None = None) -> None:
        self.path = Path(path)
        self.dataset_budgets = dict(dataset_budgets or {})
        self._key = _load_or_create_key(Path(key_path) if key_path else self.path.with_name(self.path.name + ".key"))
        self._db = open_sqlite(self.path, durability=Durability.POWER_CUT, autocommit=True)
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.Lock()  # one writer at a time; the engine runs outside it
        self._plan_locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self.tampered = self._check_chain()
        if self.tampered:
            log.error("ALARM: %s: %s; this sandbox answers no noise policy until the owner restores the ledger",
                      self.path, self.tampered)
        # How many spends each grant and each dataset has, as this process wrote or found them: a count
        # that goes down while it runs is a spend taken out (or moved to another grant or dataset).
        self._counts: dict[str, int] = defaultdict(int, self._db.execute(
            "SELECT policy_id, count(*) FROM spends GROUP BY policy_id").fetchall())
        self._dataset_counts: dict[str, int] = defaultdict(int, self._db.execute(
            "SELECT dataset, count(*) FROM spends GROUP BY dataset").fetchall())

    def spent(self, policy_id: str) -> float:
        """Epsilon the grant has spent (reservations included: a crashed query stays spent)."""
        with self._lock:
            return self._spent(policy_id)

    def dataset_spent(self, dataset: str) -> float:
        """Epsilon every grant on ``dataset`` has spent together (reservations included)."""
        with self._lock:
            return self._dataset_spent(dataset)

    def dataset_budget(self, dataset: str, share: float) -> float:
        """The dataset's whole budget: the owner's, or without one the asking grant's ``share`` (its own budget),
        so that the dataset's spends never pass a budget the owner signed."""
        return self.dataset_budgets.get(dataset, share)

    def answer(self, *, policy_id: str, dataset: str, plan_key: str, epsilon: float, budget: float,
               compute: Callable[[], bytes]) -> LedgerAnswer:
        """The stored answer to ``plan_key`` under the grant, or a new one from ``compute`` paid with
        ``epsilon`` from the grant's ``budget`` (its share) and the dataset's; raises :class:`BudgetExhausted`
        when the share cannot pay, :class:`DatasetBudgetExhausted` when the dataset's budget cannot."""
        with self._lock:
            plan_lock = self._plan_locks[(policy_id, plan_key)]
        with plan_lock:  # the same plan twice at once: the second waits and gets the first's answer
            with self._lock:
                self._check_spends(policy_id, dataset)
                stored = self._db.execute(
                    "SELECT answer FROM spends WHERE policy_id = ? AND plan_key = ? AND state = 'released'",
                    (policy_id, plan_key)).fetchone()
                if stored is not None:
                    return self._answered(stored[0], True, policy_id, dataset, budget)
                spend_id = self._reserve(policy_id, dataset, plan_key, epsilon, budget)
            try:
                answer = compute()
            except BaseException as error:
                if getattr(error, "reason", None) in NOTHING_READ:
                    with self._lock:  # the engine read nothing: the reservation goes back
                        self._set_state(spend_id, "refunded", None)
                # Otherwise the reservation stays spent: whether a query fails after the engine read the
                # data (a timeout, too many cells) can depend on the data, so a free refusal would be a
                # noise-free answer, repeatable at no cost.
                raise
            with self._lock:
                self._set_state(spend_id, "released", answer)
                return self._answered(answer, False, policy_id, dataset, budget)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    # -- budgets (called under the lock) ----------------------------------------------------------

    def _reserve(self, policy_id: str, dataset: str, plan_key: str, epsilon: float, share: float) -> str:
        """Check the grant's share and the dataset's budget and write the reservation, in one transaction: the
        lock keeps this process's threads out between the sums and the insert, the transaction any other
        writer of the file. Returns the spend's id."""
        with self._transaction():
            spent = self._spent(policy_id)
            if spent + epsilon > share + _TOLERANCE:
                raise BudgetExhausted(
                    f"the grant's privacy budget is spent ({spent:g} of {share:g}; a query needs {epsilon:g})",
                    policy=policy_id, epsilon_spent=f"{spent:g}", epsilon_budget=f"{share:g}")
            total = self.dataset_budget(dataset, share)
            together = self._dataset_spent(dataset)
            if together + epsilon > total + _TOLERANCE:
                # Only the dataset's figures: which other grants spent it, and how much each, is theirs.
                raise DatasetBudgetExhausted(
                    f"the privacy budget of dataset {dataset} is spent by the grants on it ({together:g} of "
                    f"{total:g}; a query needs {epsilon:g})",
                    table=dataset, epsilon_spent=f"{together:g}", epsilon_budget=f"{total:g}")
            spend_id = uuid.uuid4().hex
            self._insert(spend_id, policy_id, dataset, plan_key, epsilon, dt.datetime.now(dt.timezone.utc).isoformat())
        return spend_id

    def _answered(self, answer: bytes, repeated: bool, policy_id: str, dataset: str, share: float) -> LedgerAnswer:
        return LedgerAnswer(answer, repeated, self._spent(policy_id), self._dataset_spent(dataset),
                            self.dataset_budget(dataset, share))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at its start (IMMEDIATE), so what it read still holds when it commits."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- sealing ----------------------------------------------------------------------------------

    def _mac(self, *parts) -> str:
        message = "\x1f".join("" if part is None else str(part) for part in parts).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _link(self, row) -> str:
        """The MAC over what a spend is and the link before it (row: seq, id, policy, dataset, plan, epsilon, at)."""
        seq, spend_id, policy_id, dataset, plan_key, epsilon, at, previous = row
        return self._mac("link", seq, spend_id, policy_id, dataset, plan_key, repr(float(epsilon)), at, previous)

    def _seal(self, link: str, state: str, answer: bytes | None) -> str:
        return self._mac("seal", link, state, hashlib.sha256(answer).hexdigest() if answer is not None else "")

    def _insert(self, spend_id: str, policy_id: str, dataset: str, plan_key: str, epsilon: float, at: str) -> None:
        last = self._db.execute("SELECT seq, link FROM spends ORDER BY seq DESC LIMIT 1").fetchone()
        seq, previous = (last[0] + 1, last[1]) if last else (1, "")
        link = self._link((seq, spend_id, policy_id, dataset, plan_key, epsilon, at, previous))
        self._db.execute("INSERT INTO spends (id, policy_id, dataset, plan_key, epsilon, at, state, seq, link, seal) "
                         "VALUES (?, ?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                         (spend_id, policy_id, dataset, plan_key, epsilon, at, seq, link,
                          self._seal(link, "reserved", None)))
        self._counts[policy_id] += 1
        self._dataset_counts[dataset] += 1

    def _set_state(self, spend_id: str, state: str, answer: bytes | None) -> None:
        (link,) = self._db.execute("SELECT link FROM spends WHERE id = ?", (spend_id,)).fetchone()
        self._db.execute("UPDATE spends SET state = ?, answer = ?, seal = ? WHERE id = ?",
                         (state, answer, self._seal(link, state, answer), spend_id))

    def _migrate(self) -> None:
        """Add the sealing columns to a ledger written before them, and seal its spends as they are (what
        was changed before this version cannot be told)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(spends)")}
        for column, kind in (("seq", "INTEGER"), ("link", "TEXT"), ("seal", "TEXT")):
            if column not in columns:
                self._db.execute(f"ALTER TABLE spends ADD COLUMN {column} {kind}")
        unsealed = self._db.execute("SELECT rowid, id, policy_id, dataset, plan_key, epsilon, at, state, answer FROM "
                                    "spends WHERE seq IS NULL ORDER BY rowid").fetchall()
        if not unsealed or self._db.execute("SELECT 1 FROM spends WHERE seq IS NOT NULL LIMIT 1").fetchone():
            return  # a ledger sealed already: a spend without a seal in it is tampering, found by the check
        previous = ""
        self._db.execute("BEGIN IMMEDIATE")
        for seq, (rowid, spend_id, policy_id, dataset, plan_key, epsilon, at, state, answer) in enumerate(unsealed, 1):
            link = self._link((seq, spend_id, policy_id, dataset, plan_key, epsilon, at, previous))
            self._db.execute("UPDATE spends SET seq = ?, link = ?, seal = ? WHERE rowid = ?",
                             (seq, link, self._seal(link, state, answer), rowid))
            previous = link
        self._db.execute("COMMIT")

    def _check_rows(self, rows) -> str:
        """What is wrong with these spends (seq, id, policy, dataset, plan, epsilon, at, state, answer, link,
        seal, previous link), "" when nothing is."""
        for seq, spend_id, policy_id, dataset, plan_key, epsilon, at, state, answer, link, seal, previous in rows:
            if seq is None or link is None or seal is None:
                return "a spend carries no seal"
            if not hmac.compare_digest(link, self._link((seq, spend_id, policy_id, dataset, plan_key, epsilon, at,
                                                          previous))):
                return f"spend {seq} was changed or moved"
            if not hmac.compare_digest(seal, self._seal(link, state, answer)):
                return f"the state or answer of spend {seq} was changed"
        return ""

    _ROWS = ("SELECT s.seq, s.id, s.policy_id, s.dataset, s.plan_key, s.epsilon, s.at, s.state, s.answer, s.link, "
             "s.seal, COALESCE((SELECT p.link FROM spends p WHERE p.seq = s.seq - 1), '') FROM spends s")

    def _check_chain(self) -> str:
        """The whole chain: every spend sealed, numbered 1, 2, 3... without a gap, each linked to the one before."""
        rows = self._db.execute(self._ROWS + " ORDER BY s.seq").fetchall()
        if [row[0] for row in rows] != list(range(1, len(rows) + 1)):
            return "spends are missing from the chain or numbered twice"
        return self._check_rows(rows)

    def _check_spends(self, policy_id: str, dataset: str) -> None:
        """Refuse to answer over a ledger found changed: now, or at start, or with fewer spends than it had. The
        grant's spends and its dataset's are checked, since the dataset's budget counts every grant's."""
        if not self.tampered:
            if self._taken_out(policy_id, dataset):
                self.tampered = "spends were taken out of the ledger while the sandbox ran"
            else:
                self.tampered = self._check_rows(self._db.execute(
                    self._ROWS + " WHERE s.policy_id = ? OR s.dataset = ? ORDER BY s.seq",
                    (policy_id, dataset)).fetchall())
            if self.tampered:
                log.error("ALARM: %s: %s; this sandbox answers no noise policy until the owner restores the "
                          "ledger", self.path, self.tampered)
        if self.tampered:
            raise LedgerTampered(f"the privacy ledger was changed by someone without its key ({self.tampered}); "
                                 "no noisy answer is given until the owner restores it", policy=policy_id)

    def _taken_out(self, policy_id: str, dataset: str) -> bool:
        """Whether the grant or the dataset holds fewer spends than this process saw."""
        (grant,) = self._db.execute("SELECT count(*) FROM spends WHERE policy_id = ?", (policy_id,)).fetchone()
        (together,) = self._db.execute("SELECT count(*) FROM spends WHERE dataset = ?", (dataset,)).fetchone()
        return grant < self._counts[policy_id] or together < self._dataset_counts[dataset]

    def _spent(self, policy_id: str) -> float:
        row = self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM spends "
                               "WHERE policy_id = ? AND state != 'refunded'", (policy_id,)).fetchone()
        return float(row[0])

    def _dataset_spent(self, dataset: str) -> float:
        row = self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM spends "
                               "WHERE dataset = ? AND state != 'refunded'", (dataset,)).fetchone()
        return float(row[0])


def _load_or_create_key(path: Path) -> bytes:
    """The ledger's HMAC key (32 random bytes, as hex text), made with mode 0600 on first start."""
    if not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the privacy ledger's key {str(path)!r} ({type(error).__name__})") from None
    if len(key) < 32:
        raise ConfigError(f"the privacy ledger's key {str(path)!r} is shorter than 32 bytes")
    return key
