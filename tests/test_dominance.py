"""The dominance rule: a SUM or AVG cell that one or two taxpayers make up is withheld, by the (n, k)
rule or the p% rule, on cells whose contributors are known; and end to end, every withheld cell is one
that an independent computation over the raw rows finds dominated, and no other."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from fractions import Fraction

import duckdb
import pytest

from broker.client.sdk import BrokerClient
from dsbroker.guard import guard
from dsbroker.policy.model import Dominance
from broker.server import start_broker
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import run
from tests.conftest import (DISCLOSURE, GRANT, XUANWU, broker_settings_for, client_tls, declarations_file,
                            policies_with, policy_without_dominance, token_for)

# Per street: the VAT of each of its taxpayers. Revenue is 100 for everyone, so it is never dominated.
CELLS = {
    "A-one-giant": [9_000] + [100] * 11,          # the largest holds 89%: (1, 85) withholds
    "B-even": [100] * 12,                          # nobody dominates
    "C-two-giants": [4_800, 4_800] + [40] * 10,   # (1, 85) passes; the rest is 4% of the largest: p% withholds
    "D-refund": [-9_000] + [100] * 11,            # a refund dominates by magnitude
    "E-too-few": [100] * 5,                        # under the threshold: dropped, not withheld
}
SQL = ("SELECT street_code, SUM(vat_paid) AS vat, AVG(vat_paid) AS avg_vat, SUM(revenue) AS revenue, "
       "COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY street_code ORDER BY street_code")


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    # Two months each, so the rule must add a taxpayer's rows up before ranking them.
    path = declarations_file(tmp_path_factory.mktemp("dominance") / "cells.duckdb", [
        (f"{street}-{number}", dt.date(2025, month, 1), street, 100, amount // 2)
        for street, amounts in CELLS.items() for number, amount in enumerate(amounts) for month in (1, 2)])
    engine = DuckDBEngine(path)
    yield engine
    engine.close()


def released(engine, policy, dominance):
    grant = dataclasses.replace(policy, dominance=dominance)
    guarded = guard(SQL, grant, district=XUANWU, department="xuanwu-fgw")
    released = run(engine, guarded, timeout_s=10, max_rows=100)
    assert released.names == ["street_code", "vat", "avg_vat", "revenue", "n"]
    return {row[0]: row[1:] for row in released.rows}, released.counts["dominance"]


def test_each_rule_withholds_exactly_the_cells_it_should(crafted, policy):
    cells, withheld = released(crafted, policy, Dominance(n=1, k=85.0))
    # E is under the threshold: withheld whole (marked), and not counted as dominated.
    assert set(cells) == {"A-one-giant", "B-even", "C-two-giants", "D-refund", "E-too-few"}
    assert cells["E-too-few"] == (None, None, None, None)
    assert cells["A-one-giant"] == (None, None, 1200 * 2, 12) and cells["D-refund"][:2] == (None, None)
    assert cells["B-even"] == (1200, 50.0, 2400, 12) and cells["C-two-giants"][0] == 9_600 + 400
    assert withheld == 4  # vat and avg_vat of A and D

    # p%: in A the other eleven hold 1,000, over 10% of the giant's 9,000, so the second largest cannot
    # estimate it; in C the rest (400) is under 10% of 4,800, so either giant can estimate the other.
    cells, withheld = released(crafted, policy, Dominance(p=10.0))
    assert cells["C-two-giants"][:2] == (None, None) and cells["A-one-giant"][0] == 10_100
    assert cells["B-even"][0] == 1200 and withheld == 2

    cells, withheld = released(crafted, policy, Dominance(n=2, k=95.0))
    assert cells["C-two-giants"][:2] == (None, None) and cells["A-one-giant"][0] is not None  # 89% + 1% < 95%
    assert withheld == 2


def test_the_largest_alone_and_the_p_percent_rule_together_withhold_what_each_withholds(crafted, policy):
    """(1, 85) with p% = 10: the cell's largest is a plain MAX (the rule's n = 1 and the p% test's largest alike,
    no one-element list to build), and the cells withheld are those either rule withholds alone."""
    both = Dominance(n=1, k=85.0, p=10.0)
    sql = guard(SQL, dataclasses.replace(policy, dominance=both), district=XUANWU, department="xuanwu-fgw").sql
    assert "MAX(ABS(__sum_vat_paid)) AS __d0_top" in sql and "MAX(ABS(__sum_vat_paid), 1)" not in sql
    assert "LIST_SUM(MAX(ABS(__sum_vat_paid), 2)) AS __d0_top2" in sql
    cells, withheld = released(crafted, policy, both)
    assert {street for street, row in cells.items() if row[0] is None} == {"A-one-giant", "C-two-giants",
                                                                           "D-refund", "E-too-few"}
    assert cells["B-even"] == (1200, 50.0, 2400, 12) and withheld == 6


def test_without_a_dominance_rule_the_same_cells_are_released(crafted):
    grant = policy_without_dominance("the test shows what a grant without the rule releases")
    guarded = guard(SQL, grant, district=XUANWU, department="xuanwu-fgw")
    rows = run(crafted, guarded, timeout_s=10, max_rows=100).rows
    assert {row[0]: row[1] for row in rows}["A-one-giant"] == 9_000 + 1_100 and guarded.cells.dominated == ()


def test_a_dominated_measure_cannot_be_recovered_by_differencing_two_sums_in_one_result(tmp_path, policy):
    # Regression: each SUM argument was tested on its own, so SUM(vat_paid + revenue) - SUM(revenue) read a
    # dominated VAT total: the giant's 9,000 of VAT hides among everyone's even revenue of 100,000.
    path = tmp_path / "hidden.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, district_code VARCHAR, "
                           "street_code VARCHAR, revenue BIGINT, vat_paid BIGINT)")
        for number, vat in enumerate([9_000] + [100] * 11):
            connection.execute("INSERT INTO tax.declarations VALUES (?, ?, 'F', 100000, ?)",
                               [f"F-{number}", XUANWU, vat])
    engine = DuckDBEngine(path)
    try:
        grant = dataclasses.replace(policy, dominance=Dominance(n=1, k=85.0))
        guarded = guard("SELECT street_code, SUM(vat_paid + revenue) AS both_sums, SUM(revenue) AS revenue, "
                        "SUM(vat_paid * 1) AS vat FROM tax.declarations GROUP BY street_code", grant,
                        district=XUANWU, department="xuanwu-fgw")
        released = run(engine, guarded, timeout_s=10, max_rows=10)
        rows, withheld = released.rows, released.counts["dominance"]
    finally:
        engine.close()
    assert rows == [("F", None, 1_200_000, None)]
    assert withheld == 2  # each withheld cell counted once, however many of its measures are dominated


@pytest.fixture
def dominance_broker(sandbox, tmp_path):
    policies = policies_with(tmp_path, DISCLOSURE,
                             "disclosure: {min_entities: 10, dominance: {n: 1, k: 60}, p_percent: 10}")
    running = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=policies))
    client = BrokerClient(f"127.0.0.1:{running.port}", token=token_for(), tls=client_tls())
    yield client
    client.close()
    running.stop()


BY_STREET_AND_SECTION = ("SELECT street_code, industry_section, SUM(vat_paid) AS vat, COUNT(*) AS c "
                         "FROM tax.declarations GROUP BY 1, 2")


def breaks(amounts: list[int], rule: Dominance) -> bool:
    """Whether a cell's contributions (each taxpayer's total, by magnitude) break ``rule``: the rule
    written out from its definition, in exact fractions, independently of the sandbox's code."""
    ordered, k, p = sorted(amounts, reverse=True), Fraction(rule.k or 0), Fraction(rule.p or 0)
    total = sum(ordered)
    if rule.n is not None and 100 * sum(ordered[:rule.n]) > k * total:
        return True
    return rule.p is not None and 100 * (total - sum(ordered[:2])) < p * ordered[0]


def assert_withheld_exactly_the_dominated_cells(result, direct, rule: Dominance) -> None:
    """Every VAT cell of ``result`` (BY_STREET_AND_SECTION) withheld is one that breaks ``rule`` on the raw
    declarations, and every other is exact; some are withheld and some are not."""
    contributions = collections.defaultdict(list)
    for street, section, amount in direct.execute(
            "SELECT street_code, industry_section, SUM(vat_paid) FROM tax.declarations "
            f"WHERE district_code = '{XUANWU}' GROUP BY street_code, industry_section, taxpayer_id").fetchall():
        contributions[(street, section)].append(abs(amount))
    withheld = 0
    for index, (street, section, vat, count) in enumerate(result.rows):
        amounts = contributions[(street, section)]
        if (index, 3) in result.withheld:  # the whole row is under the threshold, so its cells are marked
            assert len(amounts) < 10 and vat is None and count is None and (index, 2) in result.withheld
            continue
        assert len(amounts) >= 10
        if vat is None:
            withheld += 1
            assert breaks(amounts, rule), (street, section)
        else:
            assert not breaks(amounts, rule) and vat == direct.execute(
                "SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = ? AND street_code = ? "
                "AND industry_section = ?", [XUANWU, street, section]).fetchone()[0]
        assert count is not None
    reported = next(r for r in result.disclosure_rules if r["rule"] == "dominance")
    assert reported["cells_withheld"] == withheld > 0, "the demo data should hold dominated cells"
    assert len(result.rows) > withheld, "and cells that are not"


def test_end_to_end_every_withheld_cell_is_dominated_and_every_other_is_exact(dominance_broker, direct):
    result = dominance_broker.query(GRANT, BY_STREET_AND_SECTION)
    assert_withheld_exactly_the_dominated_cells(result, direct, Dominance(n=1, k=60.0, p=10.0))


def test_the_shipped_grant_withholds_the_cells_its_two_largest_taxpayers_make_up(client, direct, policy):
    # The shipped grant says nothing but the default (n = 2, k = 85); the demo data's dominant enterprises
    # make some streets' sections theirs.
    assert policy.dominance == Dominance(n=2, k=85.0) and policy.dominance_waiver is None
    result = client.query(GRANT, BY_STREET_AND_SECTION)
    assert_withheld_exactly_the_dominated_cells(result, direct, policy.dominance)
    rule = next(r for r in result.disclosure_rules if r["rule"] == "dominance")
    assert rule["threshold"] == 2 and "2 largest taxpayer_id hold over 85%" in rule["description"]


def test_the_default_rule_on_the_crafted_cells(crafted, policy):
    # By hand, per street (two months added up per taxpayer): A's largest two hold 9,100 of 10,100 (90%),
    # C's 9,600 of 10,000 (96%), D's refund by magnitude 9,100 of 10,100; B's 200 of 1,200 (17%) and every
    # street's revenue (100 a taxpayer) are not dominated. So VAT and its average are withheld in A, C and D.
    cells, withheld = released(crafted, policy, policy.dominance)
    assert all(cells[street][:2] == (None, None) for street in ("A-one-giant", "C-two-giants", "D-refund"))
    assert cells["B-even"] == (1200, 50.0, 2400, 12) and withheld == 6
    assert [cells[street][2] for street in ("A-one-giant", "C-two-giants", "D-refund")] == [2400, 2400, 2400]
