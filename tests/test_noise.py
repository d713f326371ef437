"""Noise mode: bounded contributions, OpenDP noise with a noisy threshold, and a privacy budget that is
refused once spent, survives restarts, and is not spent by repeating a query (which returns the stored
answer, so 200 repetitions average nothing away). Also what exact mode does not prevent: differencing."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import sqlite3

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
from sandbox.ledgers.privacy import BudgetExhausted, PrivacyLedger
from sandbox.server import start_sandbox
from tests.conftest import (DISCLOSURE, GRANT, XUANWU, broker_settings_for, client_tls, declarations_file, dev_keys,
                            policies_with, policy_without_dominance, token_for)

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
    from sandbox.ledgers.privacy import LedgerTampered

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
