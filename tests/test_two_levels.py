"""Two levels: protected aggregates guarded and released as today, and an outer query on their released cells alone.

Each accepted fixture (tests/fixtures/guard/two_levels.sql) is computed twice: by the guard and the sandbox,
and by hand: each protected aggregate sent alone as a one-level query and released, its cells (withheld ones
NULL) put in a plain DuckDB table under the name the caller gave it, and the caller's outer query run there
(a one-level fixture names its aggregate and its outer query itself: ``cells`` and ``by hand``). Every cell
the answer does not mark withheld must be the hand's value; every marked one must be NULL. The refused
fixtures are in tests/fixtures/guard/*__invalid.sql (category ``outer-query``, run by tests/test_guard.py).
"""

from __future__ import annotations

import decimal
import math
import time

import duckdb
import grpc
import pytest
import sqlglot
import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError, GuardError
from dsbroker.guard import guard
from dsbroker.guard.internal_names import released_table
from dsbroker.policy.model import Noise
from sandbox.disclosure.release import run
from sandbox.disclosure.two_levels import run_two_levels
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.released_tables import MemoryTable, run_on_released
from tests.conftest import GRANT, XUANWU
from tests.guard_fixtures import read_cases
from tests.test_released_cell_auditor import (ALL_BUT_99, LONE, STREET_A, _truth, data, stack,  # noqa: F401
                                              unaudited_stack)

CASES = read_cases("two_levels.sql")
_HAND_TYPES = {"DECIMAL": "DOUBLE"}  # the hand computes decimals as doubles; the comparison allows for it


@pytest.fixture(scope="module")
def engine(demo_db):
    engine = DuckDBEngine(demo_db)
    yield engine
    engine.close()


def _guard(sql, policy, **options):
    return guard(sql, policy, district=XUANWU, department="xuanwu-fgw", **options)


def _answer(sql, policy, engine):
    guarded = _guard(sql, policy)
    return guarded, run_two_levels(engine, guarded, max_rows=guarded.max_rows, deadline=time.monotonic() + 60)


def _protected(case) -> tuple[dict[str, str], str]:
    """The caller's protected aggregates (name -> SQL) and its outer query over tables of those names."""
    if "cells" in case.expect:
        return {"cells": case.expect["cells"]}, case.expect["by hand"]
    tree = sqlglot.parse_one(case.sql, read="duckdb")
    parts: dict[str, str] = {}
    for cte in list(tree.find_all(exp.CTE)):
        if cte.this.find(exp.Table).name == "declarations":
            parts[cte.alias] = cte.this.sql("duckdb")
            cte.pop()
    for subquery in list(tree.find_all(exp.Subquery)):
        if subquery.this.args["from_"].this.name == "declarations":
            parts[subquery.alias] = subquery.this.sql("duckdb")
            subquery.replace(exp.to_table(subquery.alias))
    with_ = tree.args.get("with_")
    if with_ is not None and not with_.expressions:
        tree.set("with_", None)
    return parts, tree.sql("duckdb")


def _by_hand(case, policy, engine, direct) -> list[tuple]:
    parts, outer = _protected(case)
    hand = duckdb.connect(":memory:")
    hand.execute("SET error_on_division_by_zero = false")
    hand.execute("CREATE SCHEMA tax")
    hand.execute("CREATE TABLE tax.streets (street_code VARCHAR, street_name VARCHAR)")
    hand.executemany("INSERT INTO tax.streets VALUES (?, ?)",
                     direct.execute("SELECT street_code, street_name FROM tax.streets").fetchall())
    for name, sql in parts.items():
        released = run(engine, _guard(sql, policy), timeout_s=60)  # the aggregate sent alone, as today
        columns = ", ".join(f'"{c}" {_HAND_TYPES.get(t, t)}' for c, t in zip(released.names, released.types,
                                                                              strict=True))
        hand.execute(f"CREATE TABLE {name} ({columns})")
        if released.rows:
            hand.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(released.names))})",
                             [[float(v) if isinstance(v, decimal.Decimal) else v for v in row]
                              for row in released.rows])
    return hand.execute(outer).fetchall()


def _same(a, b) -> bool:
    if isinstance(a, float) and not math.isfinite(a):
        a = None
    if isinstance(b, float) and not math.isfinite(b):
        b = None
    if isinstance(a, (float, decimal.Decimal)) or isinstance(b, (float, decimal.Decimal)):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_answer_is_the_outer_query_computed_by_hand_on_the_released_cells(case, policy, engine, direct):
    guarded, answer = _answer(case.sql, policy, engine)
    expected = _by_hand(case, policy, engine, direct)
    assert len(answer.rows) == len(expected), (answer.rows, expected)
    assert answer.rows, "the fixture should release something"
    for row, marked, hand in zip(answer.rows, answer.withheld, expected, strict=True):
        for index, (value, by_hand) in enumerate(zip(row, hand, strict=True)):
            if index in marked:
                assert value is None, f"{guarded.outer.names[index]}: a withheld cell is NULL"
            else:
                assert _same(value, by_hand), f"{guarded.outer.names[index]}: {value!r} != {by_hand!r} in {row}"


def test_the_marks_withhold_what_reads_a_withheld_cell(policy, engine, direct):
    """Not vacuous: some fixtures' answers are marked where the hand, skipping the withheld NULLs, gives a value."""
    differing = 0
    for case in CASES:
        _, answer = _answer(case.sql, policy, engine)
        expected = _by_hand(case, policy, engine, direct)
        differing += sum(1 for row, marked in zip(expected, answer.withheld, strict=True)
                         for index in marked if row[index] is not None)
    assert differing > 0


@pytest.mark.parametrize("case", [c for c in CASES if "cells" not in c.expect], ids=lambda c: c.id)
def test_each_protected_aggregate_is_guarded_as_it_is_alone(case, policy):
    guarded = _guard(case.sql, policy)
    parts, _ = _protected(case)
    assert [part.sql for part in guarded.parts] == [_guard(sql, policy).sql for sql in parts.values()]
    assert all(f"-- {released_table(i)}, on the data:\n{part.sql};" in guarded.sql
               for i, part in enumerate(guarded.parts))


def test_a_withheld_cell_and_a_released_zero_divide_alike(policy, engine):
    """No outer query fails where a cell is withheld and succeeds where it is released, or the other way."""
    sql = ("WITH c AS (SELECT street_code, industry_section, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1, 2) "
           "SELECT street_code, industry_section, 1 / (v - v) AS a, 10 // (v - v) AS b, 10 % (v - v) AS c, "
           "CAST(v * 1000000000000 AS TINYINT) AS d FROM c ORDER BY 1, 2")
    _, answer = _answer(sql, policy, engine)
    assert any(answer.withheld) and not all(answer.withheld)
    assert all(row[2:] == (None, None, None, None) for row in answer.rows)


def test_two_levels_are_refused_under_encryption_and_noise(policy):
    sql = "SELECT street_code, SUM(vat_paid) / SUM(SUM(vat_paid)) OVER () AS share FROM tax.declarations GROUP BY 1"
    with pytest.raises(GuardError) as caught:
        _guard(sql, policy, encrypted=True)
    assert caught.value.reason == "TWO_LEVELS_NOT_SUPPORTED" and caught.value.metadata["rule"] == "split_levels"
    noisy = policy.__class__(**{**policy.__dict__, "noise": Noise(epsilon=1.0, budget=10.0,
                                                                   bounds={"vat_paid": (0, 10**8)}),
                                "dominance": None})
    with pytest.raises(GuardError) as caught:
        _guard(sql, noisy)
    assert caught.value.reason == "TWO_LEVELS_NOT_SUPPORTED"


def test_explain_lists_the_outer_rules(policy):
    steps: list = []
    _guard("WITH c AS (SELECT street_code, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1) "
           "SELECT street_code, v / SUM(v) OVER () AS share FROM c", policy, steps=steps)
    rules = [step.rule for step in steps]
    assert rules[0] == "split_levels" and "reject_unsupported_syntax" in rules
    assert rules[-3:] == ["reject_outer_unsupported", "resolve_released_tables", "add_withheld_marks"]


# The in-memory engine on its own, given SQL no guard checked: the lockdown is the second layer.
@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '/etc/hostname' AS other",
    "SET lock_configuration = false",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "COPY (SELECT 1) TO '/tmp/two-levels-escape.csv'",
])
def test_the_in_memory_engine_is_locked_down(sql):
    with pytest.raises(DsbrokerError) as caught:
        run_on_released(sql, [MemoryTable("__cells0", (("v", "BIGINT"),), [(1,)])], timeout_s=10, max_rows=10,
                        dataset="tax.declarations")
    assert caught.value.reason == "OUTER_QUERY_FAILED"


def test_the_in_memory_engine_holds_only_the_released_tables():
    result = run_on_released("SELECT table_name FROM duckdb_tables() ORDER BY 1",
                             [MemoryTable("__cells0", (("v", "BIGINT"),), [(1,)]),
                              MemoryTable("__lookup0", (("street_code", "VARCHAR"),), [("320102001",)])],
                             timeout_s=10, max_rows=10, dataset="tax.declarations")
    assert result.rows == [("__cells0",), ("__lookup0",)]


# End to end: a real broker and sandbox over gRPC.
def test_an_answer_through_the_broker_and_the_sandbox_is_the_sandbox_s_own(client, policy, engine):
    sql = next(c.sql for c in CASES if c.title.startswith("quarters side by side"))
    result = client.query(GRANT, sql)
    guarded, answer = _answer(sql, policy, engine)
    assert result.columns == list(answer.names)
    assert [tuple(row) for row in result.rows] == [tuple(row) for row in answer.rows]
    assert result.withheld == {(r, c) for r, marked in enumerate(answer.withheld) for c in marked} != set()
    assert result.rewritten_sql == guarded.sql and "-- on the released cells:" in result.rewritten_sql
    assert client.explain(GRANT, sql).rewritten_sql == result.rewritten_sql


def test_a_refusal_through_the_broker_names_the_rule_and_column(client):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, "WITH c AS (SELECT street_code, SUM(vat_paid) AS v FROM tax.declarations GROUP BY 1) "
                            "SELECT street_code, taxpayer_id FROM c")
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "OUTER_COLUMN_NOT_FOUND"
    assert error.metadata["rule"] == "resolve_released_tables" and error.metadata["column"] == "taxpayer_id"


# With the released-cell auditor (tests/test_released_cell_auditor.py's data: a lone firm in street A).
def test_two_aggregates_of_one_query_are_audited_together(data, stack):
    """The complement attack in one query: the street's total, and the total without the lone firm's industry.
    The second aggregate is audited with the first's cells recorded, so the difference is withheld."""
    street = f"street_code = '{STREET_A}'"
    result = stack().query(GRANT, _complement(street))
    total, rest, difference = result.rows[0]
    assert total == _truth(data, street) and rest is None and difference is None
    assert {(0, 1), (0, 2)} <= result.withheld


def test_without_the_auditor_the_same_query_gives_the_firm_away(data, unaudited_stack):
    street = f"street_code = '{STREET_A}'"
    total, rest, difference = unaudited_stack().query(GRANT, _complement(street)).rows[0]
    assert difference == _truth(data, f"taxpayer_id = '{LONE}'")


def test_cells_the_outer_query_drops_are_recorded_as_released(data, stack):
    """An outer query that shows nothing of its aggregate's cell still had it: it is recorded, so the
    complement asked afterwards, alone, is withheld."""
    client, street = stack(), f"street_code = '{STREET_A}'"
    hidden = client.query(GRANT, f"WITH a AS (SELECT SUM(revenue) AS v FROM tax.declarations WHERE {street}) "
                                 "SELECT 1 AS one FROM a")
    assert hidden.rows == [[1]]
    rest = client.query(GRANT, f"SELECT SUM(revenue) AS v FROM tax.declarations WHERE {street} AND {ALL_BUT_99}")
    assert rest.rows == [[None]]


def _complement(street: str) -> str:
    return (f"WITH a AS (SELECT SUM(revenue) AS v FROM tax.declarations WHERE {street}), "
            f"b AS (SELECT SUM(revenue) AS v FROM tax.declarations WHERE {street} AND {ALL_BUT_99}) "
            "SELECT a.v AS total, b.v AS rest, a.v - b.v AS difference FROM a, b")
