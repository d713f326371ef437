"""CASE buckets of a group column as group keys: end to end, and against what a department computes with them.

A bucket (``CASE WHEN size_class IN ('large', 'medium') THEN 'big' ELSE 'small' END``) is a coarser cell: the
rows of a fixed union of one group column's values. Its cells must be protected as cells (the threshold, the
dominance rule, marks, the row filter), and the released-cell auditor must see a bucket as the union it is,
so that a bucket total less its released member cells, a bucket whose ELSE takes all but one value against
the whole, and overlapping buckets across queries give no protected figure away. The guard's fixtures
(tests/fixtures/guard/, run by tests/test_guard.py and tests/test_guard_dialects.py) pin the accepted buckets
cell by cell against the unrestricted query on DuckDB and PostgreSQL, and the refused ones by reason and column.
"""

from __future__ import annotations

import grpc
import pytest

from dsbroker.errors import DsbrokerError, GuardError
from dsbroker.guard import guard
from tests.conftest import GRANT, XUANWU
from tests.test_released_cell_auditor import (  # noqa: F401 (fixtures)
    LONE, STREET_A, TOTALS_GRANT, Received, _determined, _lone_atoms, _nothing_protected_determined, _truth, data,
    stack, unaudited_stack)

BIG = "CASE WHEN size_class IN ('large', 'medium') THEN 'big' WHEN size_class IN ('micro', 'small') THEN 'small' END"


def test_a_bucket_cell_is_the_sum_of_the_values_it_takes(client):
    buckets = client.query(GRANT, f"SELECT {BIG} AS band, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat "
                                  "FROM tax.declarations GROUP BY band ORDER BY band")
    assert [row[0] for row in buckets.rows] == ["big", "small"] and not buckets.withheld
    for row in buckets.rows:
        values = "('large', 'medium')" if row[0] == "big" else "('micro', 'small')"
        filtered = client.query(GRANT, "SELECT COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat "
                                       f"FROM tax.declarations WHERE size_class IN {values}")
        assert tuple(row[1:]) == tuple(filtered.rows[0])


def test_a_small_bucket_is_withheld_and_marked_like_any_small_cell(client):
    sql = ("SELECT street_code, CASE WHEN size_class = 'large' THEN 'large' ELSE 'other' END AS sized, "
           "COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY 1, 2 ORDER BY 1, 2")
    buckets = client.query(GRANT, sql)
    counted = client.query(GRANT, "SELECT street_code, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations "
                                  "WHERE size_class = 'large' GROUP BY 1 ORDER BY 1")
    small = {row[0] for r, row in enumerate(counted.rows) if (r, 1) in counted.withheld}
    assert small, "the demo data has streets with fewer than k large taxpayers; the test should see one"
    withheld = {buckets.rows[r][0] for r, _ in buckets.withheld}
    assert withheld == small
    assert all(buckets.rows[r][2] is None for r, _ in buckets.withheld)


@pytest.mark.parametrize("sql, reason, column", [
    ("SELECT CASE WHEN vat_paid > 1000000 THEN 'big' ELSE 'small' END AS b, COUNT(*) AS c FROM tax.declarations "
     "GROUP BY b", "BUCKET_NOT_ALLOWED", "vat_paid"),
    ("SELECT CASE WHEN registration_type = '173' THEN 'a' ELSE 'b' END AS b, COUNT(*) AS c FROM tax.declarations "
     "GROUP BY b", "BUCKET_NOT_ALLOWED", "registration_type"),
    ("SELECT CASE WHEN size_class = 'large' THEN street_code ELSE 'x' END AS b, COUNT(*) AS c "
     "FROM tax.declarations GROUP BY b", "BUCKET_NOT_ALLOWED", "street_code"),
], ids=["measure", "filter column", "a column as label"])
def test_a_case_that_is_no_bucket_is_refused_over_grpc_naming_the_column(client, sql, reason, column):
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == reason
    assert error.metadata["rule"] == "reject_invalid_group_keys" and error.metadata["column"] == column
    assert "1000000" not in error.message and "173" not in error.message


def test_a_bucket_compares_its_column_only_with_literals_of_its_type(policy):
    types = {"street_code": "VARCHAR", "size_class": "VARCHAR", "period": "DATE", "taxpayer_id": "VARCHAR",
             "district_code": "VARCHAR", "vat_paid": "BIGINT"}
    for sql in ("SELECT CASE WHEN street_code = 5 THEN 'a' ELSE 'b' END AS b, COUNT(*) FROM tax.declarations "
                "GROUP BY b",
                "SELECT CASE WHEN period < 20250701 THEN 'h1' ELSE 'h2' END AS b, COUNT(*) FROM tax.declarations "
                "GROUP BY b"):
        with pytest.raises(GuardError) as caught:
            guard(sql, policy, district=XUANWU, department="xuanwu-fgw", column_types={"tax.declarations": types})
        assert caught.value.reason == "FILTER_TYPE_MISMATCH", sql
        assert caught.value.metadata["column"] in ("street_code", "period")


# Over the auditor's data (tests/test_released_cell_auditor.py): street A has 15 firms in each of 51, 52 and 65,
# 13 in 72, and LONE alone in 99.
STREET = f"street_code = '{STREET_A}'"
PAIR = "CASE WHEN industry_code IN ('51', '99') THEN 'pair' ELSE 'rest' END"


def test_a_bucket_less_its_released_member_is_caught_like_a_total_less_its_parts(data, stack):
    client, received = stack(), Received()
    buckets = received.ask(client, GRANT, f"SELECT {PAIR} AS b, SUM(revenue) FROM tax.declarations WHERE {STREET} "
                           "GROUP BY b ORDER BY b", STREET, (PAIR,))
    assert [row[1] for row in buckets] == [_truth(data, f"{STREET} AND industry_code IN ('51', '99')"),
                                           _truth(data, f"{STREET} AND industry_code NOT IN ('51', '99')")]
    received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {STREET} "
                 "GROUP BY industry_code", STREET, ("industry_code",))
    assert received.audited >= 1  # 'pair' less industry 51 would be the lone firm
    _nothing_protected_determined(data, received)


def test_a_bucket_whose_else_takes_all_but_one_value_against_the_whole(data, stack):
    client, received = stack(), Received()
    received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}", STREET)
    lone = "CASE WHEN industry_code = '99' THEN 'lone' ELSE 'others' END"
    answer = received.ask(client, GRANT, f"SELECT {lone} AS b, SUM(revenue) FROM tax.declarations WHERE {STREET} "
                          "GROUP BY b ORDER BY b", STREET, (lone,))
    assert [row[1] for row in answer] == [None, None]  # 'lone' under the threshold; 'others' by the audit
    assert received.audited == 1
    _nothing_protected_determined(data, received)


def test_overlapping_buckets_across_queries_do_not_recover_the_lone_firm(data, stack):
    client, received = stack(), Received()
    for pair in ("'51', '99'", "'52', '99'", "'51', '52'"):
        bucket = f"CASE WHEN industry_code IN ({pair}) THEN 'in' ELSE 'out' END"
        received.ask(client, GRANT, f"SELECT {bucket} AS b, SUM(revenue) FROM tax.declarations WHERE {STREET} "
                     "GROUP BY b", STREET, (bucket,))
    assert received.audited >= 1  # (51+99) + (52+99) - (51+52) is twice the lone firm
    _nothing_protected_determined(data, received)


def test_totals_over_a_bucket_withhold_its_complement(data, stack):
    client, received = stack(), Received()
    lone = "CASE WHEN industry_code = '99' THEN 'lone' ELSE 'others' END"
    answer = received.ask(client, TOTALS_GRANT, f"SELECT {lone} AS b, SUM(revenue) FROM tax.declarations "
                          f"WHERE {STREET} GROUP BY ROLLUP (b) ORDER BY b", STREET, (lone,))
    assert sum(row[1] is None for row in answer) >= 2  # the lone bucket, and the bucket or total that would open it
    _nothing_protected_determined(data, received)


def test_without_the_auditor_a_bucket_less_its_member_is_the_lone_firm(data, unaudited_stack):
    """The attack is real: unaudited, the pair bucket less industry 51 is the lone firm's exact total."""
    client, received = unaudited_stack(), Received()
    pair = received.ask(client, GRANT, f"SELECT {PAIR} AS b, SUM(revenue) FROM tax.declarations WHERE {STREET} "
                        "GROUP BY b ORDER BY b", STREET, (PAIR,))[0][1]
    industries = received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations "
                              f"WHERE {STREET} GROUP BY industry_code ORDER BY 1", STREET, ("industry_code",))
    fifty_one = next(row[1] for row in industries if row[0] == "51")
    assert pair - fifty_one == _truth(data, f"taxpayer_id = '{LONE}'")
    assert _determined(data, received.cells, _lone_atoms())
