"""Regressions for the single-taxpayer leaks an outside review found, each end to end through a real
sandbox and broker on crafted data.

Most cases compare two neighbouring databases that differ only in what the released cells do not
say (one taxpayer's value, or the size of a withheld cell): a query must succeed on both or on
neither, and give the same answer on both. An answer that differs, or an error that happens on one
only, is a way to read what disclosure control withheld.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest

from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError, GuardError
from dsbroker.guard import guard
from broker.dev.keys import sandbox_settings
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from sandbox.server import start_sandbox
from tests.conftest import (GRANT, TOTALS, XUANWU, broker_settings_for, client_tls, declarations_file, dev_keys,
                            policies_with, token_for)

JAN = dt.date(2025, 1, 1)
BIG = 2 ** 62  # a BIGINT amount: four of it overflow a BIGINT


def street(name: str, vats: list[int]) -> list[tuple]:
    """Rows of one street: one taxpayer per amount, one month each."""
    return [(f"{name}-{number}", JAN, name, 100, vat) for number, vat in enumerate(vats)]


@contextlib.contextmanager
def serving(tmp_path, name: str, rows: list[tuple], *, without_dominance: str | None = None):
    """A sandbox over a crafted data file and a broker in front of it; yields a requester's client. With
    ``without_dominance`` (a reason) the broker serves the shipped grant with its dominance rule off."""
    directory = tmp_path / name
    directory.mkdir()
    policies = policies_with(directory, without_dominance=without_dominance) if without_dominance else None
    data = declarations_file(directory / "owner-data.duckdb", rows)
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(data), datasets=("tax.declarations",),
                                            **sandbox_settings(dev_keys())))
    try:
        broker = start_broker(broker_settings_for(sandbox.port, directory / "access-log.sqlite",
                                                  **({"policies": policies} if policies else {})))
        try:
            with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
                yield client
        finally:
            broker.stop()
    finally:
        sandbox.stop()


def answer(client: BrokerClient, sql: str):
    """What a caller learns from one query: the rows and marks, or the refusal's code and reason."""
    try:
        result = client.query(GRANT, sql)
    except DsbrokerError as error:
        return ("refused", error.code, error.reason)
    return ("answered", result.columns, result.rows, sorted(result.withheld),
            [(rule["rule"], rule.get("cells_withheld", 0)) for rule in result.disclosure_rules])


def answers(tmp_path, neighbours: dict[str, list[tuple]], sql: str, *,
            without_dominance: str | None = None) -> dict[str, tuple]:
    results = {}
    for name, rows in neighbours.items():
        with serving(tmp_path, name, rows, without_dominance=without_dominance) as client:
            results[name] = answer(client, sql)
    return results


BASE = street("S-big1", [100] * 12) + street("S-big2", [200] * 15)


def test_an_overflow_in_a_withheld_cell_is_not_an_error_oracle(tmp_path):
    # The lone taxpayer's amount decides whether SUM(vat_paid * 4) overflows: a yes/no answer about a
    # cell the threshold withholds, which a binary search on the coefficient turns into its exact value.
    sql = "SELECT street_code, SUM(vat_paid * 4) AS v FROM tax.declarations GROUP BY street_code ORDER BY 1"
    found = answers(tmp_path, {"small": BASE + street("S-lone", [1]), "large": BASE + street("S-lone", [BIG])}, sql)
    assert found["small"][0] == "answered", found["small"]
    assert found["small"] == found["large"]


def test_the_order_of_rows_never_depends_on_a_hidden_count(tmp_path):
    # ORDER BY 3 named a literal output 6, which became ORDER BY 6: the engine sorted by the hidden
    # count of taxpayers per cell, withheld cells included.
    tiny = street("S-tiny", [100] * 5)
    sql = ("SELECT street_code, SUM(vat_paid) AS v, 6 AS six FROM tax.declarations GROUP BY ROLLUP (street_code) "
           "ORDER BY 3")
    found = answers(tmp_path, {"three": BASE + tiny + street("S-small", [100] * 3),
                               "eight": BASE + tiny + street("S-small", [100] * 3 + [0] * 5)}, sql,
                    without_dominance=TOTALS)
    assert found["three"][0] == "answered", found["three"]
    assert found["three"] == found["eight"]


def test_a_literal_that_looks_like_an_internal_name_changes_nothing(tmp_path):
    # A leading '__x' was read as one of the guard's own columns: the sandbox read every later column one
    # place off, and secondary suppression withheld nothing, so the total less its parts gave a small cell.
    rows = BASE + street("S-small", [100] * 3)
    with serving(tmp_path, "literal", rows, without_dominance=TOTALS) as client:
        plain = client.query(GRANT, "SELECT street_code, COUNT(*) AS c FROM tax.declarations "
                                    "GROUP BY ROLLUP (street_code) ORDER BY street_code")
        odd = client.query(GRANT, "SELECT '__x', street_code, COUNT(*) AS c FROM tax.declarations "
                                  "GROUP BY ROLLUP (street_code) ORDER BY street_code")
    assert odd.columns[1:] == plain.columns
    assert [row[1:] for row in odd.rows] == plain.rows
    assert {(row, column - 1) for row, column in odd.withheld if column > 0} == plain.withheld
    withheld = {(row, column) for row, column in plain.withheld if plain.columns[column] == "c"}
    assert len(withheld) >= 2, "the small street and at least one more cell must be withheld"


@pytest.mark.parametrize("sql", [
    # A condition smuggled through arithmetic: 1/0 is infinity, so the divisor switches a row on or off.
    "SELECT SUM(vat_paid) - SUM(vat_paid / (1 + 1/((employees-4775)*1e6*(employees-4775)*1e6))) FROM tax.declarations",
    # A power sum is a MAX: the 64th root of the cell is its largest amount.
    "SELECT SUM(" + " * ".join(["(vat_paid * 1e-8)"] * 64) + ") FROM tax.declarations",
    "SELECT SUM(vat_paid * vat_paid) FROM tax.declarations",
    "SELECT SUM(vat_paid / revenue) FROM tax.declarations",
    "SELECT AVG(vat_paid * 100 / revenue) FROM tax.declarations",
    "SELECT SUM(revenue / (employees - 7)) FROM tax.declarations",
], ids=["switch", "power-sum", "square", "ratio", "ratio-avg", "divisor"])
def test_only_linear_arguments_are_accepted_inside_aggregates(policy, sql):
    with pytest.raises(GuardError) as caught:
        guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == "AGGREGATE_ARGUMENT_NOT_LINEAR"
    assert caught.value.metadata["rule"] == "reject_invalid_aggregates"


@pytest.mark.parametrize("sql, reason", [
    ("SELECT COUNT(*) FROM tax.declarations WHERE " + " AND ".join(["street_code = '1'"] * 1000), "QUERY_TOO_COMPLEX"),
    ("SELECT SUM(vat_paid" + " + 1" * 995 + ") FROM tax.declarations", "QUERY_TOO_COMPLEX"),
    ("SELECT COUNT() FROM tax.declarations", "AGGREGATE_ARGUMENT_NOT_ALLOWED"),
    ("SELECT " + "(" * 300 + "1" + ")" * 300 + " FROM tax.declarations", "QUERY_TOO_COMPLEX"),
])
def test_costly_or_malformed_queries_get_a_refusal_not_an_internal_error(policy, sql, reason):
    with pytest.raises(GuardError) as caught:
        guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    assert caught.value.reason == reason


def test_a_cached_query_is_held_to_the_size_limit(client):
    sql = "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY street_code"
    assert client.query(GRANT, sql).rows
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, sql + " /* " + "x" * 2_000_000 + " */")
    assert caught.value.reason == "SQL_TOO_LARGE"
    many = "SELECT COUNT(*) AS c FROM tax.declarations WHERE " + " AND ".join(["street_code = '1'"] * 1000)
    with pytest.raises(DsbrokerError) as caught:
        client.query(GRANT, many)
    assert caught.value.reason == "QUERY_TOO_COMPLEX"
    assert client.query(GRANT, sql).rows  # and the broker keeps serving


def test_a_filter_literal_of_another_type_than_its_column_is_refused_before_the_data_is_read(policy):
    # Comparing a text column with a number makes DuckDB cast every value of the column: the query fails
    # if and only if some row (of any district) holds a code that is not a number.
    types = {"street_code": "VARCHAR", "industry_code": "VARCHAR", "period": "DATE", "employees": "INTEGER",
             "taxpayer_id": "VARCHAR", "district_code": "VARCHAR", "vat_paid": "BIGINT"}
    for sql in ("SELECT COUNT(*) FROM tax.declarations WHERE street_code = 5",
                "SELECT COUNT(*) FROM tax.declarations WHERE industry_code IN (64, 65)",
                "SELECT COUNT(*) FROM tax.declarations WHERE period = 20250101"):
        with pytest.raises(GuardError) as caught:
            guard(sql, policy, district=XUANWU, department="xuanwu-fgw", column_types={"tax.declarations": types})
        assert caught.value.reason == "FILTER_TYPE_MISMATCH", sql
        assert caught.value.metadata["rule"] == "reject_mistyped_filters"
