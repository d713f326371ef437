"""Safe forms the guard rewrites into forms it already accepts, end to end through a broker and a sandbox.

Each is answered with the very plan of its accepted form (the rewritten SQL byte for byte, so the same cells,
threshold, dominance rule, row filter and audit), and its refusals come back over gRPC naming rule and column.
The rewrites themselves and their cells against the unrestricted query are pinned by the guard's fixtures
(tests/fixtures/guard/accepted.sql, rewrites.sql and the ``__invalid.sql`` files, run by tests/test_guard.py).
"""

from __future__ import annotations

import grpc
import pytest

from dsbroker.errors import DsbrokerError
from tests.conftest import GRANT

BY_STREET = "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat FROM tax.declarations "


def _same_answer(client, written: str, accepted: str) -> None:
    """``written`` runs as the plan of ``accepted`` and gets its answer, withheld cells included."""
    result, expected = client.query(GRANT, written), client.query(GRANT, accepted)
    assert result.rewritten_sql == expected.rewritten_sql
    assert result.columns == expected.columns
    assert [tuple(row) for row in result.rows] == [tuple(row) for row in expected.rows] and result.rows
    assert result.withheld == expected.withheld


@pytest.mark.parametrize("written, accepted", [
    ("WHERE period >= DATE '2025-07-01' GROUP BY 1",
     "WHERE period >= DATE '2025-07-01' AND period <= DATE '9999-12-31' GROUP BY 1"),
    ("WHERE DATE '2025-07-01' > period GROUP BY 1",
     "WHERE DATE '2025-07-01' > period AND period >= DATE '0001-01-01' GROUP BY 1"),
    ("WHERE year(period) >= 2025 GROUP BY 1",
     "WHERE year(period) >= 2025 AND year(period) <= 99999999999999999999999999999999999999 GROUP BY 1"),
], ids=["date lower", "date upper, literal first", "date part"])
def test_a_one_sided_range_is_answered_as_the_far_bounded_range(client, written, accepted):
    _same_answer(client, BY_STREET + written, BY_STREET + accepted)


@pytest.mark.parametrize("written, accepted", [
    ("WHERE size_class <> 'micro' GROUP BY 1", "WHERE size_class IN ('large', 'medium', 'small') GROUP BY 1"),
    ("WHERE registration_type NOT IN ('173', '159') AND NOT (size_class = 'micro') GROUP BY 1",
     "WHERE registration_type IN ('110', '120', '151', '160', '174', '210', '310', '330') "
     "AND size_class IN ('large', 'medium', 'small') GROUP BY 1"),
], ids=["<>", "NOT IN and NOT ="])
def test_a_complement_on_listed_values_is_answered_as_the_in_list_of_the_others(client, written, accepted):
    _same_answer(client, BY_STREET + written, BY_STREET + accepted)


def test_an_or_of_equalities_is_answered_as_its_in_list(client):
    _same_answer(client, BY_STREET + "WHERE industry_section = 'C' OR industry_section = 'F' GROUP BY 1",
                 BY_STREET + "WHERE industry_section IN ('C', 'F') GROUP BY 1")


def test_distinct_lists_only_the_groups_that_pass_the_threshold(client):
    listed = client.query(GRANT, "SELECT DISTINCT street_code, size_class FROM tax.declarations")
    counted = client.query(GRANT, "SELECT street_code, size_class, COUNT(DISTINCT taxpayer_id) AS n "
                                  "FROM tax.declarations GROUP BY 1, 2")
    small = {r for r, _ in counted.withheld}
    assert small, "the demo data has groups under the threshold; the test should see one left out"
    assert [tuple(row) for row in listed.rows] == [tuple(row[:2]) for r, row in enumerate(counted.rows)
                                                   if r not in small]
    assert not listed.withheld


@pytest.mark.parametrize("sql, rule, reason, column", [
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE industry_code <> '39'",
     "reject_invalid_filters", "NEGATION_NOT_ALLOWED", "industry_code"),
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE size_class NOT IN ('micro', NULL)",
     "expand_complements", "FILTER_NOT_ALLOWED", "size_class"),
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE industry_code >= '51'",
     "reject_invalid_filters", "RANGE_NOT_BOUNDED", "industry_code"),
    ("SELECT COUNT(*) AS c FROM tax.declarations WHERE industry_code = '51' OR street_code = '320102001'",
     "reject_invalid_filters", "OR_NOT_ALLOWED", None),
], ids=["<> unlisted", "NOT IN NULL", "one-sided text", "OR of two columns"])
def test_a_form_without_an_accepted_equivalent_is_refused_over_grpc_naming_rule_and_column(client, sql, rule,
                                                                                         reason, column):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == reason
    assert error.metadata["rule"] == rule and error.metadata.get("column") == column
    assert "51" not in error.message and "39" not in error.message  # no value the caller sent is echoed


def test_a_comment_after_the_final_semicolon_is_answered(client):
    sql = BY_STREET + "GROUP BY 1"
    _same_answer(client, sql + "; -- for the report", sql)


@pytest.mark.parametrize("written, accepted", [
    ("WHERE EXTRACT(YEAR FROM period) = 2025 GROUP BY 1", "WHERE year(period) = 2025 GROUP BY 1"),
    ("WHERE date_part('month', period) IN (1, 2) GROUP BY 1", "WHERE month(period) IN (1, 2) GROUP BY 1"),
    ("WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-01-01' + INTERVAL 5 MONTH GROUP BY 1",
     "WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-06-01' GROUP BY 1"),
], ids=["EXTRACT", "date_part", "date plus interval"])
def test_date_parts_and_literal_date_arithmetic_are_answered_as_the_literal_forms(client, written, accepted):
    _same_answer(client, BY_STREET + written, BY_STREET + accepted)
