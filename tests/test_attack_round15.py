"""Findings of a fifteenth outside review: the guard's new safe forms (branch forms, merged at 27899d3).

The review attacked CASE buckets of a group column as group keys (``buckets``, ``expand_simple_case``), GROUPING()
with ROLLUP, lookups joined on a key of another name (``joins``) and strftime of a year or a month, as a curious
department would, and looked for leaks, refusals that depend on the data, and guard work out of proportion to
the query.

- **FINDING** tests failed on the code they were written against (main at 27899d3); each says how the attack
  works and what the safe behaviour is.
- **PIN** tests pass: attacks tried that the code refuses or handles correctly, pinned so that a later change
  cannot lose them silently.

Findings, all fixed on this branch: rewrites that copied parts of a query past the node limit (a simple CASE's
operand per WHEN, 82 s of guarding for a 30 KB query; complements in a bucket's WHENs as long IN lists), now held
to it (dsbroker/guard/node_budget.py); bucket number labels no 38-digit decimal holds together, which DuckDB cast
per row as it took the branch (dsbroker/guard/buckets.py); a literal of many decimals against an integer column,
whose values DuckDB cast to a decimal some do not fit (dsbroker/guard/reject_mistyped_filters.py); GROUPING() of a
strftime key, which crashed the guard (dsbroker/guard/split_cells.py).
"""

from __future__ import annotations

import dataclasses

import duckdb
import pytest

from dsbroker.errors import GuardError
from dsbroker.guard import guard
from dsbroker.guard.parse import MAX_NODES
from dsbroker.policy.model import parse_policy
from sandbox.disclosure.release import run
from tests.conftest import GRANT, POLICIES, XUANWU
# A's small class withheld with a sibling; B with a group whose size class is NULL.
from tests.test_rollup_grouping import engine  # noqa: F401 (fixture)

SHIPPED = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")


def _refusal(sql: str, policy) -> GuardError:
    with pytest.raises(GuardError) as caught:
        guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    return caught.value


# -- FINDING: rewrites that multiply the query past the node limit parse checked -----------------------------
#
# parse refuses a query of more than MAX_NODES parts, which is what bounds the guard's work by its input (the
# README: the slowest query the limits accept guards in about 0.2-0.3 s). expand_simple_case copies the CASE's
# operand into every WHEN, and a simple CASE's WHENs are siblings, not nested, so no depth limit holds them: an
# operand of 4,000 parts (an IN list, syntax every rule allows) under 1,500 WHENs is a 30 KB query that parse
# accepts and the rewrite makes 6,000,000 parts; the guard took 82 s (and gigabytes) to refuse it, on the broker
# and again in the sandbox, for every call. The safe behaviour: the rewrite is held to the same limit, and
# refuses (QUERY_TOO_COMPLEX, naming itself) before it copies past it.

def _simple_case_over_a_long_operand(values: int, whens: int) -> str:
    listed = ", ".join(f"'{i}'" for i in range(values))
    branches = " ".join(f"WHEN {'TRUE' if i % 2 else 'FALSE'} THEN 'x'" for i in range(whens))
    return f"SELECT COUNT(*) AS n FROM tax.declarations GROUP BY CASE street_code IN ({listed}) {branches} END"


def test_a_simple_case_whose_operand_is_copied_past_the_node_limit_is_refused_as_too_complex(policy):
    sql = _simple_case_over_a_long_operand(values=150, whens=100)  # 15,000 parts once written out
    error = _refusal(sql, policy)
    assert (error.reason, error.metadata["rule"]) == ("QUERY_TOO_COMPLEX", "expand_simple_case")
    assert str(MAX_NODES) in error.message


# The same through a grant's ``values``: expand_complements writes ``x <> v`` as the IN of every other listed
# value, so a WHEN of 3 parts becomes one of about as many parts as the list is long. In WHERE the conjuncts nest
# (1,000 ANDed conditions are 1,000 deep, past the depth limit), but a bucket's WHENs do not: under a grant that
# lists 500 industry codes, 1,600 WHENs ``industry_code <> '..'`` (a 58 KB query) were accepted after 11 s of
# guarding, as a cell query of 800,000 literals that the engine runs, the ledger keeps as the cell's coverage and
# every later audit of the dataset parses again. The safe behaviour: refused, QUERY_TOO_COMPLEX.

def _listing_industries(count: int):
    listed = ", ".join(f'"{10 + i}"' for i in range(count))
    return parse_policy(SHIPPED.replace("values:\n", f"values:\n  industry_code: [{listed}]\n", 1))


def test_complements_in_a_bucket_are_held_to_the_node_limit(policy):
    listing = _listing_industries(500)
    branches = " ".join(f"WHEN industry_code <> '{10 + i}' THEN 'x{i % 2}'" for i in range(60))
    error = _refusal(f"SELECT COUNT(*) AS n FROM tax.declarations GROUP BY CASE {branches} END", listing)
    assert (error.reason, error.metadata["rule"]) == ("QUERY_TOO_COMPLEX", "expand_complements")


def test_a_bucket_of_complements_within_the_limit_is_still_accepted(policy):
    listing = _listing_industries(40)
    branches = " ".join(f"WHEN industry_code <> '{10 + i}' THEN 'x{i % 2}'" for i in range(20))
    guarded = guard(f"SELECT COUNT(*) AS n FROM tax.declarations GROUP BY CASE {branches} END", listing,
                    district=XUANWU, department="xuanwu-fgw")
    assert "<>" not in guarded.sql and guarded.sql.count("IN (") >= 20


# -- PIN: GROUPING() whose keys are listed in another order than the ROLLUP's, or not all of them ---------------
#
# The sandbox computes GROUPING from the cell table's own GROUPING of every key (key 0 the highest bit); a level
# read with the bits in the ROLLUP's order instead of the caller's would call a street's total a size class's.

@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_grouping_of_keys_in_another_order_is_read_in_the_callers_order(engine, totals_policy, suppression):
    sql = ("SELECT street_code, size_class, GROUPING(size_class, street_code) AS reversed, "
           "GROUPING(size_class) AS sizes, GROUPING(street_code, street_code) AS twice, SUM(revenue) AS revenue "
           "FROM tax.declarations GROUP BY ROLLUP (street_code, size_class) ORDER BY reversed, 1, 2")
    grant = dataclasses.replace(totals_policy, suppression=suppression)
    released = run(engine, guard(sql, grant, district=XUANWU, department="xuanwu-fgw"), timeout_s=10, max_rows=100)
    assert {frozenset(spans) for spans in released.rolled_up} >= {frozenset(), frozenset({1}), frozenset({0, 1})}
    for row, spans in zip(released.rows, released.rolled_up, strict=True):
        assert row[2] == 2 * (1 in spans) + (0 in spans), row
        assert row[3] == (1 in spans) and row[4] == 3 * (0 in spans), row
    assert [row[2] for row in released.rows] == sorted(row[2] for row in released.rows)


# -- FINDING: number labels of a bucket that the engine cannot hold in one type ---------------------------------
#
# DuckDB gives a CASE's labels one type: an integer beyond BIGINT (HUGEINT) with a decimal of scale s is
# DECIMAL(38, s), and each row's label is cast to it as the row takes its branch. A 38-digit label beside 0.5 does
# not fit DECIMAL(38, 1), so ``CASE WHEN street_code = 'X' THEN 99999999999999999999999999999999999999 ELSE 0.5
# END`` failed if and only if some row of the caller's WHERE (one small cell, say) had street X: an existence test
# by error, on the rows of a withheld cell. (A 29-digit label beside a scale of 12 is silently rounded instead.)
# The safe behaviour: labels whose digits before and after the point together exceed 38 are refused
# (BUCKET_NOT_ALLOWED); the engine then never casts a label it cannot hold.

def _declarations(rows: list[tuple[str, int]]) -> duckdb.DuckDBPyConnection:
    """An in-memory tax.declarations of (street_code, industry_code) rows, one taxpayer each, all in Xuanwu; the
    industry code a BIGINT, as an owner that stores codes as numbers has it."""
    connection = duckdb.connect()
    connection.execute("CREATE SCHEMA tax")
    connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, district_code VARCHAR, "
                       "street_code VARCHAR, industry_code BIGINT)")
    connection.executemany("INSERT INTO tax.declarations VALUES (?, ?, ?, ?)",
                           [(f"t{i}", XUANWU, street, industry) for i, (street, industry) in enumerate(rows)])
    return connection


@pytest.mark.parametrize("labels", [
    "99999999999999999999999999999999999999 ELSE 0.5",
    "9223372036854775807 ELSE 0.00000000000000000001",
    "12345678901234567890123456789.5 ELSE 0.000000000001",
], ids=["HUGEINT and a decimal", "BIGINT and scale 20", "rounded"])
def test_bucket_labels_no_one_number_type_holds_are_refused(policy, labels):
    sql = f"SELECT CASE WHEN street_code = 'X' THEN {labels} END AS band, COUNT(*) AS n FROM tax.declarations " \
          "GROUP BY band"
    try:
        guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    except GuardError as refused:
        assert (refused.reason, refused.metadata["column"]) == ("BUCKET_NOT_ALLOWED", "street_code")
        assert "99999" not in refused.message
        return
    # Accepted, it must run whether or not a row takes the wide label's branch, and hold each label exactly.
    for streets in ([("Y", 1)], [("Y", 1), ("X", 1)]):
        with _declarations(streets) as connection:
            keys = {row[0] for row in connection.execute(guarded.sql).fetchall()}
        assert len(keys) == len({street for street, _ in streets}), keys


@pytest.mark.parametrize("labels", ["1 ELSE 2.5", "-1 ELSE 0.25", "100000 ELSE 0.000001", "1 ELSE 2", "0.5 ELSE NULL"])
def test_bucket_labels_one_number_type_holds_are_accepted_and_run(policy, labels):
    sql = f"SELECT CASE WHEN street_code = 'X' THEN {labels} END AS band, COUNT(*) AS n FROM tax.declarations " \
          "GROUP BY band"
    guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    with _declarations([("Y", 1), ("X", 1)]) as connection:
        assert len(connection.execute(guarded.sql).fetchall()) == 2


# -- FINDING: a number literal of many decimals against an integer column ---------------------------------------
#
# DuckDB compares a BIGINT column with 0.00000000000000000000000001 (scale 26) by casting each value to
# DECIMAL(38, 26), which holds 12 digits before the point: a 13-digit value fails the cast, on the rows the
# engine reaches (for some plans only those the other conditions keep). So ``WHERE street_code = 'X' AND
# industry_code IN (51, 0.000...1)`` failed if a row of street X (for some plans, of the district) had a code of
# 13 digits or more: an error that depends on rows the caller may not see (in WHERE, and in a bucket's WHEN,
# which reads its conditions as WHERE does). FILTER_TYPE_MISMATCH checked only that both are numbers. The safe
# behaviour: a literal whose decimals, with the column type's digits, need
# more than 38 digits is refused (FILTER_TYPE_MISMATCH, naming the column); the engine's casts then always fit.

INTEGER_CODES = {"tax.declarations": {"street_code": "VARCHAR", "industry_code": "BIGINT", "taxpayer_id": "VARCHAR",
                                      "district_code": "VARCHAR", "period": "DATE", "size_class": "VARCHAR"}}
FINE = "0." + "0" * 25 + "1"


@pytest.mark.parametrize("sql", [
    f"SELECT COUNT(*) AS n FROM tax.declarations WHERE street_code = 'X' AND industry_code IN (51, {FINE})",
    f"SELECT COUNT(*) AS n FROM tax.declarations WHERE street_code = 'X' AND industry_code = {FINE}",
    f"SELECT COUNT(*) AS n FROM tax.declarations WHERE street_code = 'X' AND industry_code BETWEEN {FINE} AND 60",
    f"SELECT CASE WHEN industry_code IN (51, {FINE}) THEN 'a' END AS band, COUNT(*) AS n FROM tax.declarations "
    "WHERE street_code = 'X' GROUP BY band",
], ids=["IN", "=", "BETWEEN", "a bucket's WHEN"])
def test_a_literal_whose_decimals_an_integer_column_cannot_take_is_refused(policy, sql):
    try:
        guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw", column_types=INTEGER_CODES)
    except GuardError as refused:
        assert (refused.reason, refused.metadata["column"]) == ("FILTER_TYPE_MISMATCH", "industry_code")
        return
    for rows in ([("X", 51), ("Y", 9132010000001)], [("X", 51), ("X", 9132010000001)]):
        with _declarations(rows) as connection:
            connection.execute(guarded.sql).fetchall()  # must not fail on either


@pytest.mark.parametrize("literal", ["51", "51.5", "0." + "0" * 17 + "1", "-3"])
def test_a_literal_an_integer_column_can_take_is_accepted_and_runs(policy, literal):
    sql = f"SELECT COUNT(*) AS n FROM tax.declarations WHERE industry_code IN (51, {literal})"
    guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw", column_types=INTEGER_CODES)
    with _declarations([("X", 51), ("X", 9132010000001), ("Y", -9223372036854775807)]) as connection:
        assert connection.execute(guarded.sql).fetchall()


# -- FINDING: GROUPING() of a strftime key crashed the guard ---------------------------------------------------
#
# ``GROUPING(strftime(period, '%Y'))`` under ``GROUP BY ROLLUP (strftime(period, '%Y'))`` passed every check, and
# split_cells then lowered the key to the text the sandbox writes of it (not the key itself) and raised an
# AssertionError: an INTERNAL error with a stack trace in the log where the README promises no input crashes the
# guard. The safe behaviour: GROUPING reads the key's level whether the key is a column, a date part or its text.

def test_grouping_of_a_strftime_key_is_its_level(engine, totals_policy):
    sql = ("SELECT strftime(period, '%Y') AS y, strftime(period, '%Y-%m') AS m, GROUPING(strftime(period, '%Y'), "
           "strftime(period, '%Y-%m')) AS level, COUNT(*) AS n FROM tax.declarations GROUP BY ROLLUP (y, m)")
    released = run(engine, guard(sql, totals_policy, district=XUANWU, department="xuanwu-fgw"), timeout_s=10,
                   max_rows=100)
    assert {row[2] for row in released.rows} == {0, 1, 3}
    for row, spans in zip(released.rows, released.rolled_up, strict=True):
        assert row[2] == 2 * (0 in spans) + (1 in spans), row
        assert (row[0] is None) == (0 in spans) and (row[1] is None) == (1 in spans), row
        assert row[0] is None or (len(row[0]) == 4 and (row[1] is None or row[1].startswith(row[0] + "-"))), row
