"""The guard writes the engine's dialect: every accepted fixture, written for PostgreSQL and run on the
real server, answers cell for cell as the DuckDB version does on the same rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid

import duckdb
import pytest

from dsbroker.guard import guard
from tests.conftest import TOTALS, XUANWU, asks_totals, copy_to_postgres, policy_without_dominance, postgres_admin
from tests.guard_fixtures import read_cases

ACCEPTED = read_cases("accepted.sql")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """The same small demo data in DuckDB and in a fresh PostgreSQL database (dropped afterwards)."""
    import psycopg

    from sandbox.demo.data import make_demo_data

    path = tmp_path_factory.mktemp("dialects") / "small.duckdb"
    make_demo_data(path, taxpayers=3_000, months=24)
    local = duckdb.connect(str(path), read_only=True)
    admin = postgres_admin()
    database = f"dsbroker_dialect_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {database}")
    try:
        server = psycopg.connect(admin.info.dsn.replace(f"dbname={admin.info.dbname}", f"dbname={database}"),
                                 autocommit=True)
        copy_to_postgres(local, server)
        yield local, server
        server.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()
        local.close()


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.title)
def test_an_accepted_query_answers_alike_on_postgresql(case, policy, engines):
    local, server = engines
    # A threshold of 2 keeps most cells of the small data, so the comparison covers many of them. Totals are
    # refused under the dominance rule, so a fixture with ROLLUP runs under the grant without it.
    if asks_totals(case.sql):
        policy = policy_without_dominance(TOTALS)
    grant = dataclasses.replace(policy, min_entities=2, min_max={"employees": ("MIN", "MAX"), "revenue": ("MAX",)})
    in_duckdb = guard(case.sql, grant, district=XUANWU, department="xuanwu-fgw").sql
    in_postgres = guard(case.sql, grant, district=XUANWU, department="xuanwu-fgw", engine_dialect="postgres").sql
    expected = sorted(map(_normal, local.execute(in_duckdb).fetchall()), key=repr)
    answered = sorted(map(_normal, server.execute(in_postgres).fetchall()), key=repr)
    assert expected, "the fixture should release cells on the small data"
    if "LIMIT" in case.sql.upper() and "ORDER BY" not in case.sql.upper():
        assert len(answered) == len(expected)
        return
    assert len(answered) == len(expected), in_postgres
    for got, want in zip(answered, expected, strict=True):
        assert all(_close(a, b) for a, b in zip(got, want, strict=True)), f"{got} != {want}\n{in_postgres}"


def _normal(row) -> tuple:
    values = []
    for value in row:
        if isinstance(value, decimal.Decimal):
            value = float(value)
        if isinstance(value, dt.datetime) and value.time() == dt.time(0):
            value = value.date()
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        values.append(value)
    return tuple(values)


def _close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b
