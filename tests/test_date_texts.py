"""strftime of a year or a month: the plan of year() or a month's truncation, the text written by the sandbox.

The engine never runs strftime: a query grouping by ``strftime(period, '%Y')`` runs the very cell query of
``year(period)`` (so the same cells, threshold, dominance rule, row filter and audit), and the sandbox writes each
released key's text as DuckDB's strftime writes it. The guard's fixtures pin the rewrite and the cells against the
unrestricted query (tests/fixtures/guard/rewrites.sql and accepted.sql, on DuckDB and PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal

import duckdb
import grpc
import pytest

from dsbroker.errors import DsbrokerError, GuardError
from dsbroker.guard import guard
from dsbroker.guard.date_texts import year_text
from dsbroker.guard.release_plan import Call, Key
from dsbroker.policy.model import Noise
from sandbox.disclosure.evaluate import Columns, compile_total
from tests.conftest import GRANT, XUANWU

COUNTS = "COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat FROM tax.declarations"


@pytest.mark.parametrize("written, accepted, text", [
    ("strftime(period, '%Y')", "year(period)", lambda key: f"{key:04d}"),
    ("strftime(period, '%Y-%m')", "date_trunc('month', period)", lambda key: key.strftime("%Y-%m")),
], ids=["year", "month"])
def test_strftime_keys_are_answered_by_the_plan_of_their_date_part(client, written, accepted, text):
    # Unordered, both come ordered by the engine's key; ORDER BY the text is the sandbox's, on the texts.
    result = client.query(GRANT, f"SELECT {written} AS k, {COUNTS} GROUP BY 1")
    expected = client.query(GRANT, f"SELECT {accepted} AS k, {COUNTS} GROUP BY 1")
    assert result.rewritten_sql == expected.rewritten_sql
    assert [row[0] for row in result.rows] == [text(row[0]) for row in expected.rows] and result.rows
    assert [tuple(row[1:]) for row in result.rows] == [tuple(row[1:]) for row in expected.rows]
    assert result.withheld == expected.withheld


def test_strftime_in_where_is_answered_as_its_date_part(client):
    written = client.query(GRANT, f"SELECT street_code, {COUNTS} WHERE strftime(period, '%Y') = '2025' "
                                  "AND strftime(period, '%Y-%m') IN ('2025-01', '2025-02') GROUP BY 1")
    accepted = client.query(GRANT, f"SELECT street_code, {COUNTS} WHERE year(period) = 2025 AND "
                                   "date_trunc('month', period) IN (DATE '2025-01-01', DATE '2025-02-01') GROUP BY 1")
    assert written.rewritten_sql == accepted.rewritten_sql and written.rows == accepted.rows and written.rows


@pytest.mark.parametrize("sql, rule, reason, detail", [
    ("SELECT strftime(period, '%Y-%m-%d') AS d, COUNT(*) AS c FROM tax.declarations GROUP BY 1",
     "reject_unsupported_syntax", "FUNCTION_NOT_ALLOWED", ("function", "STRFTIME")),
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE strftime(period, '%Y') >= '2025'",
     "reject_invalid_filters", "FILTER_NOT_ALLOWED", None),
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE strftime(period, '%Y') = '25'",
     "reject_invalid_filters", "FILTER_NOT_ALLOWED", None),
], ids=["a day", "a range on the text", "a text that is no year"])
def test_strftime_without_an_exact_equivalent_is_refused_over_grpc(client, sql, rule, reason, detail):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and (error.reason, error.metadata["rule"]) == (reason, rule)
    if detail is not None:
        assert error.metadata[detail[0]] == detail[1]


def test_a_year_s_text_is_duckdb_s_for_every_year_it_can_hold():
    with duckdb.connect() as connection:
        for year in (-44, 0, 9, 99, 999, 1000, 2025, 9999, 10000, 12345):
            written = connection.execute("SELECT strftime(make_date(?, 3, 1), '%Y'), year(make_date(?, 3, 1))",
                                         [year, year]).fetchone()
            assert year_text(written[1]) == written[0], year


@pytest.mark.parametrize("op, kind, key, text", [
    ("text_year", "int", 2025, "2025"), ("text_year", "decimal", decimal.Decimal("2025"), "2025"),
    ("text_month", "timestamp", dt.datetime(2025, 3, 1), "2025-03"), ("text_year", "int", None, None),
], ids=["DuckDB's year", "PostgreSQL's EXTRACT (numeric)", "a month", "a total's NULL"])
def test_the_sandbox_writes_the_text_from_the_engine_s_key(op, kind, key, text):
    compiled, result_kind = compile_total(Call(op, (Key(0),)), Columns(keys=(0,), statistics=(), key_kinds=(kind,),
                                                                       stat_kinds=()))
    assert compiled((key,)) == text and result_kind == "text"


def test_under_noise_a_strftime_key_is_refused(policy):
    noisy = dataclasses.replace(policy, noise=Noise(epsilon=1.0, budget=10.0, bounds={"vat_paid": (0, 10**8)}),
                                dominance=None)
    with pytest.raises(GuardError) as caught:
        guard("SELECT strftime(period, '%Y') AS y, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1", noisy,
              district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == "NOISE_OUTPUT_NOT_SUPPORTED" and caught.value.metadata["function"] == "STRFTIME"
