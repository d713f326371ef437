"""The PostgreSQL engine, on the real server: the cells it releases are DuckDB's, cell by cell (the threshold's,
the dominance rules' and the released-cell auditor's withholdings, noise mode's bounded cells and an encrypted
answer's groups and cells included); a deadline cancels the query on the server and the connection serves
again; rows are capped; and a role that could do more than read the served tables is refused at start
(ENGINE_NOT_LOCKED_DOWN, naming what is wrong)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid

import duckdb
import pytest

from dsbroker.errors import DsbrokerError
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.engine.postgres_engine import PostgresEngine
from sandbox.engine.postgres_lockdown import connection_problems
from tests.conftest import POSTGRES_DSN, copy_to_postgres, postgres_admin
from tests.engine_cells import (CASES, NOISY, SERVED, assert_audited_alike, assert_encrypted_alike,
                                assert_noisy_alike, assert_released_alike, assert_withheld_alike)

@dataclasses.dataclass
class Server:
    """A fresh database holding the small demo data, and a DSN for each role made in it."""

    admin: object  # an autocommit superuser connection to the database
    name: str
    roles: list[str]
    path: object = None  # the DuckDB file the data came from

    def dsn(self, role: str | None = None) -> str:
        dsn = POSTGRES_DSN.rsplit("/", 1)[0] + f"/{self.name}"
        return dsn if role is None else dsn.replace("postgres@", f"{role}@", 1)

    def role(self, *, tables=SERVED, temp_file_limit: str | None = "1GB", extra: tuple[str, ...] = ()) -> str:
        """A login role with SELECT on ``tables`` and ``extra`` statements (``{role}`` in them is its name)."""
        role = f"dsbroker_sandbox_test_{uuid.uuid4().hex[:8]}"
        self.roles.append(role)
        self.admin.execute(f"CREATE ROLE {role} LOGIN")
        self.admin.execute(f"GRANT USAGE ON SCHEMA tax TO {role}")
        for table in tables:
            self.admin.execute(f"GRANT SELECT ON {table} TO {role}")
        if temp_file_limit is not None:  # a superuser's setting: the owner sets it on the role
            self.admin.execute(f"ALTER ROLE {role} SET temp_file_limit = '{temp_file_limit}'")
        for statement in extra:
            self.admin.execute(statement.format(role=role))
        return role


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import psycopg

    from sandbox.demo.data import make_demo_data

    path = tmp_path_factory.mktemp("pg-engine") / "small.duckdb"
    make_demo_data(path, taxpayers=3_000, months=24)
    admin = postgres_admin()
    name = f"dsbroker_engine_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    made = Server(None, name, [])
    try:
        made.admin = psycopg.connect(made.dsn(), autocommit=True)
        with duckdb.connect(str(path), read_only=True) as local:
            copy_to_postgres(local, made.admin)
        made.path = path
        yield made
        made.admin.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for role in made.roles:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


@pytest.fixture(scope="module")
def engine(server):
    engine = PostgresEngine(server.dsn(server.role()), EngineLimits(pool_size=2), served=SERVED)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(server):
    engine = DuckDBEngine(server.path, EngineLimits(pool_size=1))
    yield engine
    engine.close()


def test_it_serves_the_served_tables_with_their_postgresql_types(engine):
    assert engine.tables() == SERVED
    columns = dict(engine.columns("tax.declarations"))
    assert columns["taxpayer_id"] == "text" and columns["period"] == "date" and columns["revenue"] == "bigint"


@pytest.mark.parametrize("grant_name, title, sql", CASES, ids=[f"{grant}: {title}" for grant, title, _sql in CASES])
def test_the_released_cells_are_duckdbs_cell_by_cell(grant_name, title, sql, policy, engine, reference):
    assert_released_alike(engine, reference, policy, grant_name, sql)


@pytest.mark.parametrize("grant_name, rule", [("k2", "min_entities"), ("k3-dominance", "dominance"),
                                              ("k2-dominance-p", "dominance")])
def test_the_comparison_covers_withheld_cells(grant_name, rule, policy, engine, reference):
    assert_withheld_alike(engine, reference, policy, grant_name, rule)


def test_the_auditor_withholds_the_same_cells_on_both_engines(policy, engine, reference, tmp_path):
    assert_audited_alike(engine, reference, policy, tmp_path)


@pytest.mark.parametrize("sql", NOISY)
def test_noise_modes_bounded_cells_are_the_same_on_both_engines(sql, policy, engine, reference):
    assert_noisy_alike(engine, reference, policy, sql)


def test_an_encrypted_answers_groups_and_cells_are_the_same_on_both_engines(policy, engine, reference):
    assert_encrypted_alike(engine, reference, policy)


def test_values_come_back_in_duckdbs_types(engine):
    result = engine.execute("SELECT SUM(revenue), COUNT(*), MIN(period), "
                            "date_trunc('month', CAST(MIN(period) AS timestamp)), EXTRACT(YEAR FROM MIN(period)) "
                            "FROM tax.declarations", timeout_s=30, max_rows=1)
    assert result.types == ["HUGEINT", "BIGINT", "DATE", "TIMESTAMP", "HUGEINT"]
    total, count, first, month, year = result.rows[0]
    assert type(total) is int and type(count) is int and type(year) is int
    assert type(first).__name__ == "date" and month.day == 1 and year == first.year


def test_a_deadline_cancels_the_query_on_the_server_and_the_connection_serves_again(server):
    role = server.role()
    single = PostgresEngine(server.dsn(role), EngineLimits(pool_size=1), served=SERVED)
    try:
        started = time.monotonic()
        with pytest.raises(DsbrokerError) as caught:
            single.execute("SELECT pg_sleep(10)", timeout_s=0.5, max_rows=1)
        assert caught.value.reason == "QUERY_TIMEOUT"
        assert time.monotonic() - started < 8, "the timeout should stop the sleep well before its 10 s"
        # Stopped on the server, not left running there: no backend of the role is still in the query.
        running = server.admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
                                       "AND state = 'active' AND query LIKE '%%pg_sleep%%'", [role]).fetchone()[0]
        assert running == 0
        assert single.execute("SELECT 42", timeout_s=10, max_rows=1).rows == [(42,)]  # the same, one connection
    finally:
        single.close()


def test_rows_are_capped_and_truncation_flagged(engine):
    capped = engine.execute("SELECT generate_series(1, 100)", timeout_s=10, max_rows=10)
    assert capped.truncated and [row[0] for row in capped.rows] == list(range(1, 11))
    whole = engine.execute("SELECT generate_series(1, 100)", timeout_s=10, max_rows=100)
    assert not whole.truncated and len(whole.rows) == 100


@pytest.mark.parametrize("sql", [
    "SELECT 1/0",
    "SELECT company_name FROM tax.taxpayers",  # not served: the role cannot read it
    "SELECT pg_read_file('/etc/hostname')",
    "COPY (SELECT 1) TO PROGRAM 'true'",
    "CREATE TABLE tax.leak AS SELECT 1",
    "SELECT 1; SELECT 2",  # the extended protocol takes one statement
    "SELECT 1) AS a; SELECT 2 AS b FROM (SELECT 1",  # a text that closes the cap's parenthesis: one statement still
    "SET statement_timeout = 0",
])
def test_engine_errors_are_refused_without_their_message(engine, sql):
    for _ in range(engine.limits.pool_size + 1):
        with pytest.raises(DsbrokerError) as caught:
            engine.execute(sql, timeout_s=10, max_rows=10)
        assert caught.value.reason == "EXECUTION_FAILED"
        assert caught.value.message == "the engine could not run the query"


@pytest.mark.parametrize("setup, wrong", [
    (lambda server: server.role(extra=("GRANT CREATE ON SCHEMA tax TO {role}",)), "CREATE on schema tax"),
    (lambda server: server.role(extra=("GRANT CREATE ON DATABASE " + server.name + " TO {role}",)),
     "CREATE on the database"),
    (lambda server: server.role(tables=SERVED | {"tax.taxpayers"}), "SELECT on tables not served: tax.taxpayers"),
    (lambda server: server.role(extra=("GRANT INSERT ON tax.streets TO {role}",)),
     "privileges beyond SELECT on tax.streets"),
    (lambda server: server.role(extra=("GRANT pg_read_server_files TO {role}",)), "member of pg_read_server_files"),
    (lambda server: server.role(extra=("GRANT pg_execute_server_program TO {role}",)),
     "COPY TO PROGRAM allowed"),
    (lambda server: server.role(temp_file_limit=None), "temp_file_limit is not bounded"),
    (lambda server: server.role(extra=("ALTER ROLE {role} CREATEROLE",)), "CREATEROLE"),
])
def test_a_role_that_could_do_more_is_refused_at_start(server, setup, wrong):
    role = setup(server)
    with pytest.raises(DsbrokerError) as caught:
        PostgresEngine(server.dsn(role), EngineLimits(pool_size=1), served=SERVED)
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
    assert wrong in caught.value.message


def test_the_superuser_is_refused_for_every_reason_it_has(server):
    with pytest.raises(DsbrokerError) as caught:
        PostgresEngine(server.dsn(), EngineLimits(pool_size=1), served=SERVED)
    for wrong in ("superuser", "pg_read_file allowed", "COPY TO PROGRAM allowed", "CREATE on the database"):
        assert wrong in caught.value.message


def test_a_connection_is_checked_again_after_the_owner_widens_the_role(server):
    import psycopg

    role = server.role()
    engine = PostgresEngine(server.dsn(role), EngineLimits(pool_size=1), served=SERVED)
    engine.close()
    server.admin.execute(f"GRANT CREATE ON SCHEMA tax TO {role}")
    with contextlib.closing(psycopg.connect(server.dsn(role), autocommit=True)) as connection:
        assert "CREATE on schema tax" in connection_problems(connection, EngineLimits(), SERVED)


def test_the_auditors_blocks_are_read_afresh_on_postgresql_every_time(engine):
    """The owner's database can change between two audits (other sessions write to it), so the engine vouches
    for no stamp and the auditor's block cache keeps nothing: the same coverages are read from the server again."""
    from sandbox.audit.blocks import BlockCache

    class Counting:
        """The real engine, counting the queries it runs."""

        def __init__(self, inner):
            self.inner, self.queries, self.dialect = inner, 0, inner.dialect

        def data_stamp(self):
            return self.inner.data_stamp()

        def execute(self, sql, **limits):
            self.queries += 1
            return self.inner.execute(sql, **limits)

    counting, cache = Counting(engine), BlockCache()
    coverage = ("SELECT street_code AS __k0 FROM tax.declarations WHERE district_code = '320102' AND "
                "(period = CAST('2025-01-01' AS DATE))")
    for _ in range(2):
        blocks = cache.read(counting, [coverage], dataset="tax.declarations", entity="taxpayer_id",
                            measures=["vat_paid"], timeout_s=60)
    assert counting.queries == 2 and blocks.signatures


@pytest.mark.parametrize("seed", range(3))
def test_the_auditors_query_over_combinations_of_values_reads_the_direct_querys_blocks(engine, reference, policy,
                                                                                      seed):
    """PostgreSQL matches rows to their combination of values by each value's text and whether it is NULL (it
    hashes no IS NOT DISTINCT FROM): the blocks are the direct query's, and DuckDB's."""
    import random

    from tests.block_differential import blocks_read, random_coverages

    coverages = random_coverages(engine, policy, random.Random(seed), 12)
    direct = blocks_read(engine, coverages, by_values=False)
    assert direct, "the coverages keep no row: the comparison would prove nothing"
    assert blocks_read(engine, coverages, by_values=True) == direct
    assert blocks_read(reference, random_coverages(reference, policy, random.Random(seed), 12),
                       by_values=True) == direct


def test_combinations_of_values_match_nulls_and_equal_values_of_two_texts_on_postgresql(server):
    """A NULL is a value of a combination; 1.0 and 1.00 are one numeric with two texts, and -0 and 0 one float:
    each row still meets exactly its combination, so the blocks are the direct query's."""
    from sandbox.audit.blocks import read_blocks

    server.admin.execute("CREATE TABLE tax.combinations (taxpayer_id TEXT, code TEXT, amount NUMERIC, "
                         "ratio DOUBLE PRECISION, paid BIGINT)")
    rows = [(f"t{i % 5}", [None, "a", "b"][i % 3], [None, "1.0", "1.00", "2"][i % 4], [None, -0.0, 0.0, 0.5][i % 4],
             i) for i in range(48)]
    with server.admin.cursor() as cursor:
        cursor.executemany("INSERT INTO tax.combinations VALUES (%s, %s, %s, %s, %s)", rows)
    tables = SERVED | {"tax.combinations"}
    engine = PostgresEngine(server.dsn(server.role(tables=tables)), EngineLimits(pool_size=1), served=tables)
    coverages = [f"SELECT code AS __k0, amount AS __k1 FROM tax.combinations WHERE {where}" for where in
                 ("code IS NULL OR code = 'a'", "amount = 1 OR amount IS NULL", "ratio = 0 OR code = 'b'",
                  "ratio > 0.1 OR ratio IS NULL", "paid >= 10 AND paid < 30")]
    coverages += ["SELECT ratio AS __k0 FROM tax.combinations WHERE amount >= 1"]
    try:
        read = {by_values: read_blocks(engine, coverages, dataset="tax.combinations", entity="taxpayer_id",
                                       measures=["paid"], timeout_s=60, by_values=by_values)
                for by_values in (False, True)}
    finally:
        engine.close()
    direct, combined = (dict(zip(read[b].signatures, read[b].contributions, strict=True)) for b in (False, True))
    assert len(direct) > 5 and sum(len(c) for c in direct.values()) > 10
    assert combined == direct
    assert len(read[True].signatures) == len(combined), "a signature came back as two blocks"


def test_thousands_of_distinct_conditions_are_audited_on_postgresql(engine, reference):
    """PostgreSQL takes at most 1,664 columns in a query, so a direct block query (a column per condition) over
    2,000 conditions cannot run there; the query over combinations of values holds them in one array, and its
    blocks are DuckDB's direct query's."""
    from dsbroker.errors import DsbrokerError
    from tests.block_differential import blocks_read

    spelt = [f"SELECT street_code AS __k0 FROM tax.declarations WHERE district_code = '320102' AND "
             f"(registration_type IN ('173', 'x{i}'))" for i in range(2_000)]
    with pytest.raises(DsbrokerError):
        blocks_read(engine, spelt, by_values=False)
    read = blocks_read(engine, spelt, by_values=True)
    assert read and read == blocks_read(reference, spelt, by_values=False)
