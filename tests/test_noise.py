"""Noise mode: bounded contributions, OpenDP noise with a noisy threshold, and a privacy budget that is
refused once spent, survives restarts, and is not spent by repeating a query (which returns the stored
answer, so 200 repetitions average nothing away). The budget is the dataset's: every noise grant on it
spends one budget, each at most its own share. Also what exact mode does not prevent: differencing."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import sqlite3
import threading
import time

import pytest

from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from broker.dev.keys import sandbox_settings
from dsbroker.policy.model import Noise
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import run
from sandbox.disclosure.noise import noisy_answer
from sandbox.ledgers.privacy import BudgetExhausted, DatasetBudgetExhausted, LedgerTampered, PrivacyLedger
from sandbox.server import start_sandbox
from tests.conftest import (DISCLOSURE, GRANT, XUANWU, broker_settings_for, client_tls, declarations_file, dev_keys,
                            policies_with, policy_without_dominance, shipped_grant_text, sign, token_for)

BOUND = 1_000_000  # the most one taxpayer's revenue adds to a cell
GIANT = 3_000_000  # the lone enterprise of street X declares this each month, far over the bound
NOISE = Noise(epsilon=1.0, budget=3.0, bounds={"revenue": (0, BOUND), "vat_paid": (0, 100_000)}, rows_per_entity=2)
NOISE_YAML = ("disclosure:\n  min_entities: 10\n  noise: {epsilon: 1.0, budget: 3.0, rows_per_entity: 2, "
              f"bounds: {{revenue: [0, {BOUND}], vat_paid: [0, 100000]}}}}")
SQL = "SELECT street_code, SUM(revenue) AS revenue FROM tax.declarations GROUP BY street_code"


def taxpayers():
    """Street A: 300 taxpayers of 1,000 a month; B: 3 small ones; X: one enterprise of GIANT a month."""
    people = [(f"A-{n}", "A", 1_000) for n in range(300)] + [(f"B-{n}", "B", 1_000) for n in range(3)]
    return people + [("X-giant", "X", GIANT)]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    path = declarations_file(tmp_path_factory.mktemp("noise") / "cells.duckdb", [
        (taxpayer, dt.date(2025, month, 1), street, revenue, revenue // 10)
        for taxpayer, street, revenue in taxpayers() for month in (1, 2)])
    return path


@pytest.fixture(scope="module")
def engine(crafted):
    engine = DuckDBEngine(crafted)
    yield engine
    engine.close()


def exact_cells(engine, policy, sql):
    noisy = dataclasses.replace(policy, noise=NOISE, dominance=None)  # a noise grant has no dominance rule
    guarded = guard(sql, noisy, district=XUANWU, department="xuanwu-fgw")
    result = engine.execute(guarded.sql, timeout_s=10, max_rows=100)
    return guarded, result


def test_each_taxpayer_adds_at_most_its_bound_to_a_cell_and_is_counted_once(engine, policy):
    guarded, result = exact_cells(engine, policy, "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n, "
                                                  "SUM(revenue) AS revenue, COUNT(*) AS c FROM tax.declarations "
                                                  "GROUP BY street_code")
    assert result.names == ["street_code", "__entities", "__q0", "__q1"]
    cells = {row[0]: row[1:] for row in result.rows}
    # X's enterprise declared 6,000,000 over two months: clipped to the bound, so noise at the bound's
    # scale hides it. Its two rows count in full (rows_per_entity is 2).
    assert cells["X"] == (1, BOUND, 2)
    assert cells["A"] == (300, 300 * 2_000, 600) and cells["B"] == (3, 3 * 2_000, 6)
    assert "HAVING" not in guarded.sql  # the exact threshold gives way to the noisy one


def test_a_taxpayer_contributes_to_at_most_groups_per_entity_cells(engine, policy):
    # Everyone declared in both months; with groups_per_entity 1 each taxpayer counts in one month only.
    _, result = exact_cells(engine, policy, "SELECT period, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations "
                                            "GROUP BY period")
    assert sum(row[1] for row in result.rows) == len(taxpayers())
    assert len(result.rows) == 2 and all(row[1] > 100 for row in result.rows)  # the hash spreads them


def test_noisy_threshold_never_releases_a_lone_taxpayer_and_keeps_a_large_cell(engine, policy):
    guarded, result = exact_cells(engine, policy, SQL)
    seen = collections.Counter()
    for _ in range(300):
        answer = noisy_answer(guarded.noise, NOISE, policy.min_entities, result.names, result.types, result.rows,
                              max_rows=100)
        seen.update(row[0] for row in answer.rows)
    assert answer.calibration.threshold >= policy.min_entities
    assert seen == {"A": 300}  # X (one taxpayer) and B (three) never appear; A (300) always does


def test_stated_intervals_hold_the_true_value_about_95_percent_of_the_time(engine, policy):
    guarded, result = exact_cells(engine, policy, "SELECT street_code, SUM(revenue) AS revenue, COUNT(*) AS c, "
                                                  "COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations "
                                                  "GROUP BY street_code")
    true = {"revenue": 600_000, "c": 600, "n": 300}
    within = collections.Counter()
    values = collections.defaultdict(set)
    runs = 400
    for _ in range(runs):
        answer = noisy_answer(guarded.noise, NOISE, policy.min_entities, result.names, result.types, result.rows,
                              max_rows=100)
        (row,) = answer.rows
        widths = {column.name: column.half_width for column in answer.columns}
        for name, value in zip(answer.names[1:], row[1:], strict=True):
            within[name] += abs(value - true[name]) <= widths[name]
            values[name].add(value)
    for name in true:
        assert 0.90 <= within[name] / runs <= 0.99, (name, within[name])
        assert len(values[name]) > 10, "the noise is fresh on every draw"
    assert widths["revenue"] >= BOUND  # one taxpayer's whole contribution lies inside the noise


def test_exact_mode_does_not_stop_differencing_and_says_so(engine, policy):
    # Documented limit: two allowed totals that differ by one street read that street's cell, which the
    # threshold withholds on its own: street B's three taxpayers, 2 months of 1,000 each.
    def total(streets, grant=policy):
        guarded = guard(f"SELECT SUM(revenue) AS total FROM tax.declarations WHERE street_code IN ({streets})",
                        grant, district=XUANWU, department="xuanwu-fgw")
        return run(engine, guarded, timeout_s=10, max_rows=10).rows[0][0]

    assert total("'A', 'B'") - total("'A'") == 3 * 2 * 1_000
    # The shipped grant's dominance rule withholds a total that one enterprise makes up: X's 6,000,000 of
    # A's and X's 6,600,000 (91%, over 85% for the two largest). Without the rule the difference reads it.
    assert total("'A', 'X'") is None
    threshold_only = policy_without_dominance("the test shows what the threshold alone lets differencing read")
    assert total("'A', 'X'", threshold_only) - total("'A'", threshold_only) == 2 * GIANT


@pytest.fixture
def noisy_servers(crafted, tmp_path):
    """A sandbox on the crafted data with its own ledger, and a broker with the noise grant; restartable."""
    policies = policies_with(tmp_path, DISCLOSURE, NOISE_YAML)
    ledger = tmp_path / "ledger.sqlite"
    running = []

    def start():
        for server in running:
            server.stop()
        running.clear()
        sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(crafted), privacy_ledger=str(ledger),
                                                datasets=("tax.declarations",),
                                                **sandbox_settings(dev_keys())))
        broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
        running.extend([broker, sandbox])
        return BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())

    yield start, ledger, tmp_path / "log.sqlite"
    for server in running:
        server.stop()


def test_noise_end_to_end_repetition_budget_and_restart(noisy_servers):
    start, ledger, log = noisy_servers
    client = start()
    first = client.query(GRANT, SQL)
    assert [row[0] for row in first.rows] == ["A"]
    assert first.noise["epsilon_spent"] == 1.0 and first.noise["epsilon_total_spent"] == 1.0
    assert first.noise["repeated_answer"] is False and first.noise["threshold"] >= 10
    assert {r["rule"] for r in first.disclosure_rules} == {"noisy_threshold", "noise"}
    assert first.rows[0][1] != 600_000, "noise was added"  # a zero draw is possible in principle, at odds ~1e-7

    # The repetition attack: the same query 200 times gets the same answer, and spends nothing more.
    repeats = [client.query(GRANT, SQL) for _ in range(200)]
    assert all(r.rows == first.rows and r.noise["repeated_answer"] for r in repeats)
    assert repeats[-1].noise["epsilon_total_spent"] == 1.0
    assert sum(r.rows[0][1] for r in repeats) / 200 == first.rows[0][1]  # averaging gains nothing
    # Layout does not make a new query: whitespace and keyword case reuse the stored answer.
    assert client.query(GRANT, SQL.lower().replace(" ", "  ")).rows == first.rows

    # Another wording is another query: it spends, until the budget is gone; then a clear refusal.
    client.query(GRANT, SQL.replace("AS revenue", "AS r2"))
    client.query(GRANT, SQL.replace("AS revenue", "AS r3"))
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, SQL.replace("AS revenue", "AS r4"))
    assert caught.value.reason == "PRIVACY_BUDGET_EXHAUSTED" and caught.value.code.name == "RESOURCE_EXHAUSTED"
    assert caught.value.metadata["epsilon_spent"] == "3" and caught.value.metadata["epsilon_budget"] == "3"
    assert client.query(GRANT, SQL).rows == first.rows  # a stored answer costs nothing, so it is still given
    client.close()

    # Restarting both servers does not reset the budget or the stored answers.
    client = start()
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, SQL.replace("AS revenue", "AS r4"))
    assert caught.value.reason == "PRIVACY_BUDGET_EXHAUSTED"
    again = client.query(GRANT, SQL)
    assert again.rows == first.rows and again.noise["epsilon_total_spent"] == 3.0
    client.close()

    with sqlite3.connect(log) as db:
        results = db.execute("SELECT decision, reason, detail FROM access_log WHERE event = 'query.result'").fetchall()
    assert sum(reason == "PRIVACY_BUDGET_EXHAUSTED" for _, reason, _ in results) == 2
    assert sum('"epsilon_spent": 1.0' in detail for _, _, detail in results) == 3
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*), SUM(epsilon) FROM spends WHERE state = 'released'").fetchone() == (3, 3.0)


def test_explain_states_the_noise_before_anything_is_spent(noisy_servers):
    start, ledger, _ = noisy_servers
    client = start()
    explanation = client.explain(GRANT, SQL)
    assert explanation.noise.epsilon_spent == 1.0 and explanation.noise.threshold >= 10
    assert [c.name for c in explanation.noise.columns] == ["revenue"]
    assert explanation.noise.columns[0].half_width_95 >= BOUND
    assert "each query spends epsilon 1" in explanation.disclosure_rules[1].description
    client.close()
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT COUNT(*) FROM spends").fetchone() == (0,)


def test_only_a_query_refused_before_the_engine_read_anything_gets_its_reservation_back(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")

    def busy():
        raise DsbrokerError("the sandbox is busy; try again", reason="SANDBOX_BUSY")

    def fails_on_the_data():  # a timeout, too many cells: whether it happens can depend on the data
        raise DsbrokerError("the query has more cells than any report needs", reason="NOISE_TOO_MANY_CELLS")

    with pytest.raises(DsbrokerError):
        ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k", epsilon=1.0, budget=3.0, compute=busy)
    assert ledger.spent("g") == 0.0
    with pytest.raises(DsbrokerError):
        ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k", epsilon=1.0, budget=3.0,
                      compute=fails_on_the_data)
    assert ledger.spent("g") == 1.0, "a refusal that read the data is no free answer"
    got = ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k", epsilon=1.0, budget=3.0,
                        compute=lambda: b"answer")
    assert (got.answer, got.repeated, got.spent) == (b"answer", False, 2.0)
    # A reservation left by a crash (written, never released) stays spent: the noise may have left.
    ledger._insert("crashed", "g", "tax.declarations", "k2", 1.0, "2026-11-21")
    with pytest.raises(BudgetExhausted):
        ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k3", epsilon=1.0, budget=3.0,
                      compute=lambda: b"x")
    with pytest.raises(sqlite3.DatabaseError, match="keeps every spend"):
        ledger._db.execute("DELETE FROM spends")
    ledger.close()


@pytest.mark.parametrize("tampering", [
    "UPDATE spends SET state = 'refunded'",
    "UPDATE spends SET epsilon = 0.001",
    "UPDATE spends SET policy_id = 'another' WHERE seq = 1",
    "DROP TRIGGER spends_no_delete; DELETE FROM spends WHERE seq = 1",
    "DROP TRIGGER spends_no_delete; DELETE FROM spends WHERE seq = 3",
    "UPDATE spends SET answer = x'00' WHERE state = 'released'",
    "INSERT INTO spends (id, policy_id, dataset, plan_key, epsilon, at, state) "
    "VALUES ('forged', 'g', 'tax.declarations', 'k9', 0.0, '2026-11-21', 'refunded')",
])
def test_a_writer_without_the_ledgers_key_gets_no_budget_back_and_no_noisy_answer(tmp_path, tampering):
    """Every change to the spends by someone without the ledger's key is found: while the sandbox runs and
    when it starts again; the ledger then answers no noise policy (fail closed)."""
    path = tmp_path / "ledger.sqlite"
    ledger = PrivacyLedger(path)
    for key in ("k1", "k2", "k3"):
        ledger.answer(policy_id="g", dataset="tax.declarations", plan_key=key, epsilon=1.0, budget=3.0,
                      compute=lambda: b"answer")
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.executescript(tampering)
    with pytest.raises(LedgerTampered) as caught:
        ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k4", epsilon=1.0, budget=3.0,
                      compute=lambda: b"fresh")
    assert caught.value.reason == "PRIVACY_LEDGER_TAMPERED"
    ledger.close()
    if "seq = 3" in tampering:
        # The newest spends cut off: no key tells it once the sandbox starts again (the README says so;
        # the execution ledger and the broker's log still hold those answers).
        return
    reopened = PrivacyLedger(path)
    assert reopened.tampered
    with pytest.raises(LedgerTampered):
        reopened.answer(policy_id="g", dataset="tax.declarations", plan_key="k1", epsilon=1.0, budget=3.0,
                        compute=lambda: b"fresh")
    reopened.close()


def test_a_ledger_from_before_the_seals_is_sealed_as_it_is_and_keeps_counting(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with sqlite3.connect(path) as raw:
        raw.executescript("""
            CREATE TABLE spends (id TEXT PRIMARY KEY, policy_id TEXT NOT NULL, dataset TEXT NOT NULL,
                plan_key TEXT NOT NULL, epsilon REAL NOT NULL, at TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'refunded')), answer BLOB);
            INSERT INTO spends VALUES ('a', 'g', 'tax.declarations', 'k1', 1.0, '2026-11-01', 'released', x'01');
            INSERT INTO spends VALUES ('b', 'g', 'tax.declarations', 'k2', 1.0, '2026-11-02', 'refunded', NULL);
        """)
    ledger = PrivacyLedger(path)
    assert not ledger.tampered and ledger.spent("g") == 1.0
    assert ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k1", epsilon=1.0, budget=3.0,
                         compute=lambda: b"fresh").answer == b"\x01"
    ledger.answer(policy_id="g", dataset="tax.declarations", plan_key="k3", epsilon=1.0, budget=3.0,
                  compute=lambda: b"new")
    ledger.close()
    assert not PrivacyLedger(path).tampered


# -- the budget is the dataset's: every noise grant on it spends one budget, each at most its share ----------

SECOND_GRANT = "xuanwu-tjj-2026-001"  # the district statistics bureau's grant over the same dataset
DATASET = "tax.declarations"


def ask(ledger, policy_id, plan_key, *, budget=3.0, epsilon=1.0):
    """One noisy answer from ``ledger`` under ``policy_id`` on the dataset (a plan key of its own)."""
    return ledger.answer(policy_id=policy_id, dataset=DATASET, plan_key=plan_key, epsilon=epsilon, budget=budget,
                         compute=lambda: f"{policy_id}:{plan_key}".encode())


@pytest.fixture
def two_noise_grants(crafted, tmp_path):
    """A sandbox on the crafted data and a broker with two departments' noise grants (budget 3 each) on the
    same dataset; ``start(noise_budgets)`` (re)starts both servers over the same ledger and returns a function
    that connects a department."""
    noisy = shipped_grant_text().replace(DISCLOSURE, NOISE_YAML)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / f"{GRANT}.yaml").write_text(sign(noisy), encoding="utf-8")
    second = noisy.replace(f"id: {GRANT}", f"id: {SECOND_GRANT}").replace("department: xuanwu-fgw",
                                                                          "department: xuanwu-tjj")
    (policies / f"{SECOND_GRANT}.yaml").write_text(sign(second), encoding="utf-8")
    ledger = tmp_path / "ledger.sqlite"
    running, clients = [], []

    def start(noise_budgets=()):
        for server in running:
            server.stop()
        running.clear()
        sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(crafted), privacy_ledger=str(ledger),
                                                datasets=(DATASET,), noise_budgets=noise_budgets,
                                                **sandbox_settings(dev_keys())))
        broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
        running.extend([broker, sandbox])

        def connect(department):
            client = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(department), tls=client_tls())
            clients.append(client)
            return client
        return connect

    yield start
    for client in clients:
        client.close()
    for server in running:
        server.stop()


def reworded(n):
    """A new query each time (a new wording pays), all on the dataset's noise grant."""
    return SQL.replace("AS revenue", f"AS r{n}")


def test_two_grants_on_one_dataset_together_spend_at_most_the_dataset_budget_across_a_restart(two_noise_grants):
    connect = two_noise_grants(noise_budgets=((DATASET, 4.0),))
    fgw, tjj = connect("xuanwu-fgw"), connect("xuanwu-tjj")
    for n in range(3):
        fgw.query(GRANT, reworded(n))
    first = tjj.query(SECOND_GRANT, reworded(0))  # the same wording under another grant is its own query
    assert first.noise["epsilon_total_spent"] == 1.0 and first.noise["epsilon_budget"] == 3.0
    assert first.noise["dataset_epsilon_spent"] == 4.0 and first.noise["dataset_epsilon_budget"] == 4.0
    with pytest.raises(DsbrokerError) as caught:
        tjj.query(SECOND_GRANT, reworded(1))  # its share has 2 left, the dataset nothing
    refusal = caught.value
    assert refusal.reason == "DATASET_BUDGET_EXHAUSTED" and refusal.code.name == "RESOURCE_EXHAUSTED"
    assert refusal.metadata == {"table": DATASET, "epsilon_spent": "4", "epsilon_budget": "4"}
    # Who else spent it, and how much each, is the other grant's: neither its id nor its department is told.
    assert not any(name in text for name in (GRANT, "xuanwu-fgw", "fgw")
                   for text in (str(refusal), *refusal.metadata.values()))
    with pytest.raises(DsbrokerError) as caught:
        fgw.query(GRANT, reworded(3))
    assert caught.value.reason == "PRIVACY_BUDGET_EXHAUSTED"  # its own share is spent: that is said first

    # The dataset's spent total is on disk: a restart gives neither grant anything back.
    connect = two_noise_grants(noise_budgets=((DATASET, 4.0),))
    tjj = connect("xuanwu-tjj")
    with pytest.raises(DsbrokerError) as caught:
        tjj.query(SECOND_GRANT, reworded(1))
    assert caught.value.reason == "DATASET_BUDGET_EXHAUSTED"
    again = tjj.query(SECOND_GRANT, reworded(0))  # a stored answer costs nothing, so it is still given
    assert again.rows == first.rows and again.noise["repeated_answer"]
    assert again.noise["dataset_epsilon_spent"] == 4.0


def test_without_an_owner_budget_two_grants_share_one_grants_budget(two_noise_grants):
    connect = two_noise_grants()
    fgw, tjj = connect("xuanwu-fgw"), connect("xuanwu-tjj")
    fgw.query(GRANT, reworded(0))
    fgw.query(GRANT, reworded(1))
    answer = tjj.query(SECOND_GRANT, reworded(0))
    assert answer.noise["dataset_epsilon_spent"] == 3.0 and answer.noise["dataset_epsilon_budget"] == 3.0
    for client, grant in ((fgw, GRANT), (tjj, SECOND_GRANT)):
        with pytest.raises(DsbrokerError) as caught:
            client.query(grant, reworded(2))
        assert caught.value.reason == "DATASET_BUDGET_EXHAUSTED"


def test_two_grants_querying_at_once_cannot_overspend_the_dataset_budget(two_noise_grants):
    connect = two_noise_grants(noise_budgets=((DATASET, 4.0),))
    askers = [(connect("xuanwu-fgw"), GRANT), (connect("xuanwu-tjj"), SECOND_GRANT)]
    start = threading.Barrier(2)
    outcomes = []  # list.append is atomic; a Counter's += is not

    def run(client, grant):
        start.wait()
        for n in range(3):
            try:
                client.query(grant, reworded(n))
                outcomes.append("answered")
            except DsbrokerError as error:
                outcomes.append(error.reason)

    threads = [threading.Thread(target=run, args=asker) for asker in askers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collections.Counter(outcomes) == {"answered": 4, "DATASET_BUDGET_EXHAUSTED": 2}


def test_a_grants_share_is_enforced_while_the_dataset_has_budget_left(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", dataset_budgets={DATASET: 10.0})
    ask(ledger, "g", "k1", budget=2.0)
    got = ask(ledger, "g", "k2", budget=2.0)
    assert (got.spent, got.dataset_spent, got.dataset_budget) == (2.0, 2.0, 10.0)
    with pytest.raises(BudgetExhausted) as caught:
        ask(ledger, "g", "k3", budget=2.0)
    assert caught.value.metadata == {"policy": "g", "epsilon_spent": "2", "epsilon_budget": "2"}
    assert ask(ledger, "h", "k1", budget=5.0).dataset_spent == 3.0  # another grant's share is its own
    ledger.close()


def test_without_an_owner_budget_a_dataset_never_spends_more_than_its_largest_grants_budget(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite")
    ask(ledger, "a", "k1")
    ask(ledger, "a", "k2")
    ask(ledger, "b", "k1")
    with pytest.raises(DatasetBudgetExhausted):
        ask(ledger, "b", "k2")  # b's share has 2 left, but the dataset has spent b's whole budget
    # A grant the owner signed a larger budget for may spend up to it, and the dataset then stands at it.
    ask(ledger, "c", "k1", budget=5.0)
    assert ask(ledger, "c", "k2", budget=5.0).dataset_spent == 5.0
    with pytest.raises(DatasetBudgetExhausted):
        ask(ledger, "c", "k3", budget=5.0)
    with pytest.raises(DatasetBudgetExhausted):
        ask(ledger, "a", "k3")
    assert ledger.dataset_spent(DATASET) == 5.0
    # Another dataset's budget is its own.
    other = ledger.answer(policy_id="d", dataset="tax.other", plan_key="k1", epsilon=1.0, budget=3.0,
                          compute=lambda: b"x")
    assert (other.dataset_spent, other.dataset_budget) == (1.0, 3.0)
    ledger.close()


def test_the_dataset_budget_holds_against_many_threads_of_two_grants_at_once(tmp_path):
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", dataset_budgets={DATASET: 5.0})
    start = threading.Barrier(2)
    outcomes = []

    def run(policy_id):
        start.wait()
        for n in range(5):
            try:
                ledger.answer(policy_id=policy_id, dataset=DATASET, plan_key=f"k{n}", epsilon=1.0, budget=5.0,
                              compute=lambda: time.sleep(0.005) or b"answer")  # the engine runs outside the lock
                outcomes.append("answered")
            except DatasetBudgetExhausted:
                outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(grant,)) for grant in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert collections.Counter(outcomes) == {"answered": 5, "refused": 5}
    assert ledger.dataset_spent(DATASET) == 5.0
    ledger.close()


def test_two_ledgers_on_one_file_reserve_in_turn_and_cannot_overspend(tmp_path):
    # Two processes on one file (a restart overlapping the old one): the check and the reservation are one
    # transaction, so what one read is still true when it writes.
    path = tmp_path / "ledger.sqlite"
    ledgers = [PrivacyLedger(path, dataset_budgets={DATASET: 3.0}) for _ in range(2)]
    start = threading.Barrier(2)
    answered = []

    def run(ledger, policy_id):
        start.wait()
        for n in range(3):
            try:
                answered.append(ask(ledger, policy_id, f"k{n}"))
            except DatasetBudgetExhausted:
                pass

    threads = [threading.Thread(target=run, args=(ledger, grant)) for ledger, grant in zip(ledgers, "ab", strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answered) == 3 and ledgers[0].dataset_spent(DATASET) == 3.0
    for ledger in ledgers:
        ledger.close()


@pytest.mark.parametrize("tampering", [
    "UPDATE spends SET state = 'refunded' WHERE policy_id = 'h'",
    "UPDATE spends SET epsilon = 0.001 WHERE policy_id = 'h'",
    "UPDATE spends SET dataset = 'tax.other' WHERE policy_id = 'h'",
    "DROP TRIGGER spends_no_delete; DELETE FROM spends WHERE seq = 4",
])
def test_another_grants_spend_given_back_is_found_before_the_dataset_budget_pays(tmp_path, tampering):
    """Another grant's spend refunded, cheapened, moved or cut off would free the dataset's budget: the grant
    that asks next finds it, though none of its own spends changed."""
    path = tmp_path / "ledger.sqlite"
    ledger = PrivacyLedger(path, dataset_budgets={DATASET: 4.0})
    for key in ("k1", "k2", "k3"):
        ask(ledger, "g", key)
    ask(ledger, "h", "k1")
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.executescript(tampering)
    with pytest.raises(LedgerTampered):
        ask(ledger, "g", "k4", budget=5.0)
    ledger.close()


def test_noise_budgets_are_read_from_a_toml_table_and_name_served_datasets_with_positive_budgets(tmp_path):
    from dsbroker.errors import ConfigError
    from dsbroker.settings import load_settings
    from sandbox.server import _noise_budgets

    config = tmp_path / "sandbox.toml"
    config.write_text('datasets = ["tax.declarations"]\n[noise_budgets]\n"tax.declarations" = 6\n', encoding="utf-8")
    settings = load_settings(SandboxSettings, config)
    assert settings.noise_budgets == ((DATASET, 6),) and _noise_budgets(settings) == {DATASET: 6.0}
    for wrong in ((("tax.taxpayers", 6.0),), ((DATASET, 0.0),), ((DATASET, float("inf")),), ((DATASET, True),),
                  ((DATASET, 1.0), (DATASET, 2.0)), ((DATASET,),)):
        with pytest.raises(ConfigError):
            _noise_budgets(dataclasses.replace(settings, noise_budgets=wrong))
