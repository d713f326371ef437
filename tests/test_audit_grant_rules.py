"""The rules a cell was released under: what a laxer grant received is not "known before" to a stricter one.

The ledger's scope is the dataset across grants, and a cell released before at its value is free to repeat, a
combination the cells before give no new leak. That holds between grants whose rules are alike; a grant under
min_entities 5 or without the dominance rule may receive what a grant under 10, or with it, must not. The ledger
keeps, per cell, the rules of each grant it was released to (``Rules.text``), and an answer must also pass the
audit with only the cells released under rules at least as strict as its own (``Rules.within``).
tests/test_attack_auditor_11.py holds the threshold case end to end; here: the order on rules, the ledger's
record of them, the dominance case end to end, and that a stricter grant's cells stay free to a laxer one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from dsbroker.policy.model import Dominance
from sandbox.audit.auditor import Rules
from sandbox.ledgers.released_cells import ReleasedCell, ReleasedCellLedger
from tests.conftest import SHIPPED_DOMINANCE, dominance_off
from tests.test_attack_auditor import STREET, Stack, _one
from tests.test_released_cell_auditor import STREET_A, data  # noqa: F401

SHIPPED = Rules(10, Dominance(n=2, k=85))

# (the rules a cell was released under, the rules of the grant asking now, whether the cell is known before to it)
ORDER = [
    (SHIPPED, SHIPPED, True),
    (Rules(12, Dominance(n=2, k=85)), SHIPPED, True),  # a larger threshold
    (Rules(5, Dominance(n=2, k=85)), SHIPPED, False),  # a smaller one
    (Rules(10, Dominance(n=3, k=85)), SHIPPED, True),  # more contributors at the same share
    (Rules(10, Dominance(n=2, k=80)), SHIPPED, True),  # the same contributors at a lower share
    (Rules(10, Dominance(n=1, k=85)), SHIPPED, False),  # fewer contributors
    (Rules(10, Dominance(n=2, k=90)), SHIPPED, False),  # a higher share
    (Rules(10, None), SHIPPED, False),  # dominance off
    (SHIPPED, Rules(10, None), True),
    (Rules(10, Dominance(n=2, k=85, p=10)), SHIPPED, True),  # a p% rule on top
    (SHIPPED, Rules(10, Dominance(n=2, k=85, p=10)), False),  # the p% rule missing
    (Rules(10, Dominance(n=2, k=85, p=20)), Rules(10, Dominance(n=2, k=85, p=10)), True),
    (Rules(10, Dominance(n=2, k=85, p=5)), Rules(10, Dominance(n=2, k=85, p=10)), False),
    (Rules(10, Dominance(p=10)), Rules(10, Dominance(n=2, k=85)), False),  # not comparable: taken as laxer
    (Rules(10, Dominance(n=2, k=85)), Rules(10, Dominance(p=10)), False),
]


@pytest.mark.parametrize(("released", "asking", "known"), ORDER,
                         ids=[f"{r.k}-{r.dominance}-to-{a.k}-{a.dominance}" for r, a, _ in ORDER])
def test_a_cell_is_known_before_only_to_grants_whose_rules_are_no_stricter(released, asking, known):
    assert asking.within(frozenset({released.text()})) is known


@pytest.mark.parametrize("recorded", ["", "not json", "[]", '{"min_entities": "10"}', '{"min_entities": 10.5}',
                                      '{"min_entities": 10, "dominance": [2, 85]}',
                                      '{"min_entities": 10, "dominance": {"n": "2", "k": 85}}'])
def test_rules_the_ledger_cannot_read_count_as_laxer_than_any(recorded):
    assert not SHIPPED.within(frozenset({recorded}))
    assert not SHIPPED.within(frozenset())  # a cell recorded before rules were kept


def test_the_ledger_keeps_every_set_of_rules_a_cell_was_released_under(tmp_path):
    path = tmp_path / "released.sqlite"
    lax, strict = Rules(5, None).text(), SHIPPED.text()
    cell = ReleasedCell("SELECT 1", 0, (), "sum:revenue", 100, frozenset({lax}))
    ledger = ReleasedCellLedger(path)
    ledger.record("tax.declarations", [cell])
    assert ledger.cells("tax.declarations") == [cell]
    # The same cell again under other rules, at another value: the first value stays, the rules add up.
    ledger.record("tax.declarations", [ReleasedCell("SELECT 1", 0, (), "sum:revenue", 999, frozenset({strict}))])
    both = ReleasedCell("SELECT 1", 0, (), "sum:revenue", 100, frozenset({lax, strict}))
    assert ledger.cells("tax.declarations") == [both]
    ledger.close()
    reopened = ReleasedCellLedger(path)  # and a restart keeps them
    try:
        assert reopened.cells("tax.declarations") == [both]
        assert SHIPPED.within(reopened.cells("tax.declarations")[0].rules)
    finally:
        reopened.close()


BIG = f"91{STREET_A}520000"
WITHOUT_52 = f"{STREET} AND industry_code IN ('51', '65', '72', '99')"


@pytest.fixture()
def dominant(data, tmp_path) -> Path:  # noqa: F811
    """The suite's data with one firm of street A's industry 52 declaring 700,000 a month: it dominates A/52
    (95% of it), not street A (80%), under the shipped (n = 2, k = 85)."""
    owner = tmp_path / "dominant.duckdb"
    shutil.copy(data, owner)
    with duckdb.connect(str(owner)) as connection:
        connection.execute("UPDATE tax.declarations SET revenue = 700000 WHERE taxpayer_id = ?", [BIG])
    return owner


def _truth(owner: Path, where: str) -> int:
    with duckdb.connect(str(owner), read_only=True) as connection:
        return connection.execute(f"SELECT SUM(revenue) FROM tax.declarations WHERE {where}").fetchone()[0]


LAX = "xuanwu-tjj-2026-001"  # the second department's grant, with its dominance rule off


@pytest.mark.parametrize("spelling", ["the same cells", "cells spelt anew"])
def test_a_grant_with_the_dominance_rule_does_not_receive_what_a_grant_without_it_was_given(dominant, tmp_path,
                                                                                         spelling):
    """xuanwu-tjj's grant has the dominance rule off: it may learn A/52 as street A less street A without 52. The
    shipped grant may not (BIG is 95% of it). Asking the cells xuanwu-tjj received, or the same cells spelt anew,
    does not give it."""
    deployment = Stack(dominant, tmp_path, tmp_path / "released.sqlite",
                       second=[(SHIPPED_DOMINANCE, dominance_off("a laxer grant, for the test"))])
    dominated = _truth(dominant, f"{STREET} AND industry_code = '52'")
    try:
        lax = deployment.client("xuanwu-tjj")
        whole = _one(lax, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}", LAX)
        rest = _one(lax, f"SELECT SUM(revenue) FROM tax.declarations WHERE {WITHOUT_52}", LAX)
        assert whole - rest == dominated  # the laxer grant's own right
        strict = deployment.client()
        assert _one(strict, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET} AND industry_code = '52'") \
            is None  # withheld by its own dominance rule
        spelt = (STREET, WITHOUT_52) if spelling == "the same cells" else (
            f"{STREET} AND industry_code IN ('51', '52', '65', '72', '99')",
            f"{STREET} AND industry_code IN ('51', '65', '72', '99', '00')")
        total = _one(strict, f"SELECT SUM(revenue) FROM tax.declarations WHERE {spelt[0]}")
        without = _one(strict, f"SELECT SUM(revenue) FROM tax.declarations WHERE {spelt[1]}")
    finally:
        deployment.stop()
    assert total is None or without is None or total - without != dominated, \
        f"the shipped grant learns a block its dominance rule withholds: {total} - {without} = {dominated}"


def test_cells_a_stricter_grant_received_stay_free_to_a_laxer_one(dominant, tmp_path):
    """The other way round nothing changes: the shipped grant's street A is known before to xuanwu-tjj (its
    rules withhold less), which then gets street A without 52, whose difference its own rules allow."""
    deployment = Stack(dominant, tmp_path, tmp_path / "released.sqlite",
                       second=[(SHIPPED_DOMINANCE, dominance_off("a laxer grant, for the test"))])
    try:
        strict = deployment.client()
        whole = _one(strict, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}")
        assert whole is not None
        lax = deployment.client("xuanwu-tjj")
        assert _one(lax, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}", LAX) == whole
        rest = _one(lax, f"SELECT SUM(revenue) FROM tax.declarations WHERE {WITHOUT_52}", LAX)
        # ... and the shipped grant then asking street A without 52 is withheld: the laxer grant's cell is no
        # "known before" to it.
        again = _one(strict, f"SELECT SUM(revenue) FROM tax.declarations WHERE {WITHOUT_52}")
    finally:
        deployment.stop()
    assert rest is not None and whole - rest == _truth(dominant, f"{STREET} AND industry_code = '52'")
    assert again is None


def test_a_repeated_answer_writes_nothing_and_one_under_other_rules_adds_its_rules(data, tmp_path):  # noqa: F811
    """An answer repeated under the rules it was released under is free and leaves the ledger as it was (no write,
    no flush); the same answer under other rules is free too where they are no stricter, and the ledger then
    holds both sets of rules on each of its cells, as the ledger's own record does."""
    import dataclasses
    import time

    from dsbroker.guard import guard
    from dsbroker.policy.model import load_policy
    from sandbox.audit.auditor import Auditor
    from sandbox.disclosure.release import release
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.engine.interface import EngineLimits
    from tests.conftest import GRANT, POLICIES, XUANWU

    shipped = load_policy(POLICIES / f"{GRANT}.yaml")
    lax = dataclasses.replace(shipped, min_entities=shipped.min_entities - 1)
    sql = "SELECT street_code, SUM(revenue) AS revenue, COUNT(*) AS n FROM tax.declarations GROUP BY street_code"
    engine = DuckDBEngine(str(data), EngineLimits())
    ledger = ReleasedCellLedger(tmp_path / "released.sqlite")
    auditor = Auditor(engine, ledger)

    def answer(policy):
        guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
        result = engine.execute(guarded.sql, timeout_s=60, max_rows=1000)
        with auditor.lock(guarded.dataset):
            released = release(result.names, result.types, result.rows, guarded,
                                audit=auditor.session(guarded, deadline=time.monotonic() + 60))
        return released, Rules(guarded.min_entities, guarded.dominance).text()

    def writes() -> int:
        (changes,) = ledger._db.execute("SELECT total_changes()").fetchone()
        return changes

    try:
        first, shipped_rules = answer(shipped)
        cells = ledger.cells("tax.declarations")
        assert cells and first.counts["audit"] == 0
        assert all(cell.rules == frozenset({shipped_rules}) for cell in cells)
        before = writes()
        again, _ = answer(shipped)
        assert again.rows == first.rows and writes() == before, "a repeat under the same rules wrote to the ledger"
        laxer, lax_rules = answer(lax)
        assert laxer.rows == first.rows and writes() > before
        assert [cell.key for cell in ledger.cells("tax.declarations")] == [cell.key for cell in cells]
        assert all(cell.rules == frozenset({shipped_rules, lax_rules}) for cell in ledger.cells("tax.declarations"))
    finally:
        engine.close()
        ledger.close()
