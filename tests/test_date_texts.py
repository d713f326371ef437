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


def test_an_or_of_strftime_equalities_is_answered_as_the_in_of_its_date_part(client):
    written = client.query(GRANT, f"SELECT street_code, {COUNTS} WHERE strftime(period, '%Y') = '2025' "
                                  "OR strftime(period, '%Y') = '2024' GROUP BY 1")
    accepted = client.query(GRANT, f"SELECT street_code, {COUNTS} WHERE year(period) IN (2025, 2024) GROUP BY 1")
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


# -- HAVING on a strftime key's text: the key's text, tested by the sandbox on the released keys ----------------

# Industries of one street by month: small cells, some withheld (the threshold, the dominance rule).
BY_STREET_AND_MONTH = ("SELECT industry_code, strftime(period, '%Y-%m') AS m, COUNT(DISTINCT taxpayer_id) AS n, "
                       "SUM(vat_paid) AS vat FROM tax.declarations WHERE street_code = '320102001' GROUP BY 1, 2")


@pytest.mark.parametrize("having, kept", [
    ("m >= '2025-06'", lambda m: m >= "2025-06"),
    ("strftime(period, '%Y-%m') BETWEEN '2024-11' AND '2025-02'", lambda m: "2024-11" <= m <= "2025-02"),
    ("m IN ('2024-01', '2025-12') OR m < '2024-03'", lambda m: m in ("2024-01", "2025-12") or m < "2024-03"),
    ("NOT (m <> '2025-03')", lambda m: m == "2025-03"),
], ids=["a range by the alias", "BETWEEN by strftime", "IN or a range", "NOT of <>"])
def test_having_on_a_month_s_text_keeps_the_rows_of_those_keys_marks_and_all(client, having, kept):
    """The cells are the query's without HAVING (the same cell query runs, only uncut and unordered, since HAVING
    tests the released keys' texts after it), so the answer is that answer's rows whose text passes, each cell
    withheld (marked) exactly where it was."""
    everything = client.query(GRANT, BY_STREET_AND_MONTH)
    answered = client.query(GRANT, f"{BY_STREET_AND_MONTH} HAVING {having}")
    assert answered.rewritten_sql.removesuffix(" LIMIT 50001") == everything.rewritten_sql.split(" ORDER BY")[0]
    assert everything.withheld, "the comparison should cover withheld cells"
    expected = {tuple(row[:2]): (row, {c for r, c in everything.withheld if r == i})
                for i, row in enumerate(everything.rows) if kept(row[1])}
    got = {tuple(row[:2]): (row, {c for r, c in answered.withheld if r == i}) for i, row in enumerate(answered.rows)}
    assert got == expected and got and len(answered.rows) == len(got)
    assert any(withheld for _, withheld in got.values()) or having.startswith("NOT"), "marks kept beside the keys"


def test_having_on_a_year_s_text_answers_as_the_where_on_its_year(client):
    by_text = client.query(GRANT, f"SELECT strftime(period, '%Y') AS y, {COUNTS} GROUP BY 1 HAVING y = '2025'")
    by_where = client.query(GRANT, f"SELECT strftime(period, '%Y') AS y, {COUNTS} WHERE year(period) = 2025 GROUP BY 1")
    assert by_text.rows == by_where.rows and [row[0] for row in by_text.rows] == ["2025"]


@pytest.mark.parametrize("having", ["y = 2025", "y >= 2025", "strftime(period, '%Y') < DATE '2025-01-01'",
                                    "y IN ('2025', 2024)", "y > street_code", "y"],
                         ids=["= a number", "a range on a number", "a date", "an IN with a number", "a column",
                              "a bare text"])
def test_having_that_compares_a_year_s_text_with_no_text_is_refused_over_grpc(client, having):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, f"SELECT street_code, strftime(period, '%Y') AS y, {COUNTS} GROUP BY 1, 2 HAVING {having}")
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATE_TEXT_MISTYPED")
    assert (error.metadata["rule"], error.metadata["column"]) == ("reject_mistyped_key_texts", "period")


@pytest.mark.parametrize("sql, reason", [
    (f"SELECT street_code, {COUNTS} GROUP BY 1 HAVING strftime(period, '%Y') = '2025'", "OUTPUT_NOT_AGGREGATED"),
    (f"SELECT strftime(period, '%Y') AS y, {COUNTS} GROUP BY 1 HAVING strftime(period, '%Y-%m') >= '2025-06'",
     "OUTPUT_NOT_AGGREGATED"),
    (f"SELECT strftime(period, '%Y-%m') AS m, {COUNTS} GROUP BY 1 HAVING strftime(period, '%Y-%m-%d') > '2025-06-15'",
     "FUNCTION_NOT_ALLOWED"),
], ids=["a period no cell groups by", "a month where the cells are years", "a day where the cells are months"])
def test_having_on_a_text_that_would_read_the_rows_is_refused(client, sql, reason):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql)
    assert caught.value.reason == reason


def test_totals_with_a_strftime_key_keep_grouping_and_refuse_having(policy):
    """Under ROLLUP, GROUPING() of a strftime key still reads the key's level, and HAVING stays refused with totals
    (protecting them needs every row of the table), on the key's text as on anything."""
    from tests.conftest import policy_without_dominance, TOTALS
    totals = policy_without_dominance(TOTALS)
    sql = ("SELECT street_code, strftime(period, '%Y') AS y, GROUPING(strftime(period, '%Y')) AS all_years, "
           "COUNT(*) AS c FROM tax.declarations GROUP BY ROLLUP (street_code, strftime(period, '%Y'))")
    assert guard(sql, totals, district=XUANWU, department="xuanwu-fgw").sql
    with pytest.raises(GuardError) as caught:
        guard(f"{sql} HAVING y >= '2025'", totals, district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == "TOTALS_HAVING_NOT_ALLOWED"


def test_a_group_key_aliased_as_its_own_column_is_not_read_as_the_key_where_the_engines_read_the_column(policy):
    with pytest.raises(GuardError) as caught:
        guard("SELECT strftime(period, '%Y-%m') AS period, SUM(vat_paid) AS vat FROM tax.declarations "
              "GROUP BY period HAVING period >= '2025-06'", policy, district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == "ALIAS_SHADOWS_COLUMN"
