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
from dsbroker.guard import guard
from dsbroker.policy.model import Dominance, Noise
from dsbroker.results.table import encode_table
from sandbox.audit.auditor import Auditor
from sandbox.disclosure.encryption import encrypted_release
from sandbox.disclosure.release import run
from sandbox.ledgers.released_cells import ReleasedCellLedger
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.engine.postgres_engine import PostgresEngine
from sandbox.engine.postgres_lockdown import connection_problems
from tests.conftest import ENCRYPTED, POSTGRES_DSN, TOTALS, XUANWU, copy_to_postgres, postgres_admin
from tests.guard_fixtures import read_cases

# The company names stay unserved: the role may not read them, and the lockdown checks it.
SERVED = {"tax.declarations", "tax.streets", "tax.industries", "tax.registration_types"}
ROLLUPS = [
    "SELECT street_code, size_class, SUM(vat_paid) AS vat FROM tax.declarations "
    "GROUP BY ROLLUP (street_code, size_class) ORDER BY 1, 2",
    "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY ROLLUP (street_code)",
    "SELECT industry_section, SUM(vat_paid + cit_paid) AS tax, COUNT(DISTINCT taxpayer_id) AS n "
    "FROM tax.declarations GROUP BY ROLLUP (industry_section)",
]
# A threshold of 2 keeps most cells of the small data; the dominance grants withhold some sums besides (the
# dominance rule does not combine with totals, so the ROLLUPs run under the first grant only, the shipped
# grant with its dominance rule off).
GRANTS = {"k2": {"min_entities": 2, "dominance": None, "dominance_waiver": TOTALS},
          "k3-dominance": {"min_entities": 3, "dominance": Dominance(n=1, k=50.0)},
          "k2-dominance-p": {"min_entities": 2, "dominance": Dominance(n=2, k=80.0, p=20.0)}}
CASES = [(grant, case.title, case.sql) for grant in GRANTS for case in read_cases("accepted.sql")
         if grant == "k2" or "ROLLUP" not in case.sql.upper()] + [("k2", sql, sql) for sql in ROLLUPS]


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
    (duck_table, *duck_rest), (pg_table, *pg_rest) = (_released(served, sql, policy, grant_name)
                                                      for served in (reference, engine))
    assert duck_table.row_count > 0, "the query should release cells on the small data"
    assert pg_table == duck_table
    assert pg_rest == duck_rest


@pytest.mark.parametrize("grant_name, rule", [("k2", "min_entities"), ("k3-dominance", "dominance"),
                                              ("k2-dominance-p", "dominance")])
def test_the_comparison_covers_withheld_cells(grant_name, rule, policy, engine, reference):
    sql = "SELECT street_code, industry_section, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1, 2"
    (duck_table, duck_counts, _), (pg_table, pg_counts, _) = (_released(served, sql, policy, grant_name)
                                                              for served in (reference, engine))
    assert pg_counts == duck_counts and duck_counts[rule] > 0
    assert pg_table == duck_table


# Differencing, street by street: the cells by street and section first, then totals that the withheld cells
# are the difference of (a street's total, a street's total less one section, the district's). The auditor
# withholds the second kind wherever, with what was released before, it would give a small cell away.
AUDITED = [
    "SELECT street_code, industry_section, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1, 2",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations GROUP BY 1",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE industry_section IN ('C', 'F', 'I', 'L', "
    "'M') GROUP BY 1",
    "SELECT industry_section, SUM(vat_paid) AS vat, COUNT(*) AS c FROM tax.declarations GROUP BY 1",
    "SELECT size_class, SUM(vat_paid + cit_paid) AS tax FROM tax.declarations WHERE period BETWEEN "
    "DATE '2024-01-01' AND DATE '2024-06-30' GROUP BY 1",
    "SELECT street_code, SUM(vat_paid) AS vat FROM tax.declarations WHERE period BETWEEN DATE '2024-01-01' AND "
    "DATE '2024-12-31' GROUP BY 1",
    "SELECT SUM(vat_paid) AS vat FROM tax.declarations",
]
NOISE = Noise(epsilon=1.0, budget=10.0, bounds={"revenue": (0, 10_000_000), "vat_paid": (0, 1_000_000)},
              rows_per_entity=2)
NOISY = ["SELECT street_code, SUM(revenue) AS revenue, COUNT(*) AS c FROM tax.declarations GROUP BY street_code",
         "SELECT industry_section, AVG(vat_paid) AS vat FROM tax.declarations WHERE period BETWEEN DATE '2024-01-01' "
         "AND DATE '2024-03-31' GROUP BY 1"]
ENCRYPTED_SQL = ("SELECT street_code, industry_section, COUNT(DISTINCT taxpayer_id) AS n, SUM(vat_paid) AS vat, "
                 "AVG(cit_paid) AS cit FROM tax.declarations GROUP BY 1, 2")


def test_the_auditor_withholds_the_same_cells_on_both_engines(policy, engine, reference, tmp_path):
    """The same queries in the same order, each engine with a ledger of its own: every answer, the auditor's
    withholdings included, is the same cell for cell."""
    audited = {}
    for served in (reference, engine):
        auditor = Auditor(served, ReleasedCellLedger(tmp_path / f"{served.dialect}.released.sqlite"))
        try:
            audited[served.dialect] = [_released(served, sql, policy, "k3-dominance", auditor=auditor)
                                       for sql in AUDITED]
        finally:
            auditor.ledger.close()
    for sql, (duck_table, duck_counts, _), (pg_table, pg_counts, _) in zip(AUDITED, audited["duckdb"],
                                                                           audited["postgres"], strict=True):
        assert pg_counts == duck_counts, sql
        assert pg_table == duck_table, sql
    assert sum(counts["audit"] for _table, counts, _truncated in audited["duckdb"]) > 0, \
        "the sequence should make the auditor withhold cells"


@pytest.mark.parametrize("sql", NOISY)
def test_noise_modes_bounded_cells_are_the_same_on_both_engines(sql, policy, engine, reference):
    """Noise is drawn in the sandbox; what it is drawn on (the engine's exact, bounded cells) must be the same."""
    noisy = dataclasses.replace(policy, noise=NOISE, dominance=None)  # a noise grant has no dominance rule
    cells = {}
    for served in (reference, engine):
        guarded = _guarded(served, sql, noisy)
        result = served.execute(guarded.sql, timeout_s=60, max_rows=10_000)
        cells[served.dialect] = (result.names, sorted(result.rows, key=repr))
    assert cells["duckdb"][1], "the query should have cells on the small data"
    assert cells["postgres"] == cells["duckdb"]


def test_an_encrypted_answers_groups_and_cells_are_the_same_on_both_engines(policy, engine, reference):
    grant = dataclasses.replace(policy, min_entities=3, dominance=None, dominance_waiver=ENCRYPTED,
                                results=("aggregate", "encrypted"))
    released = {}
    for served in (reference, engine):
        guarded = _guarded(served, ENCRYPTED_SQL, grant, encrypted=True)
        result = served.execute(guarded.sql, timeout_s=60, max_rows=guarded.max_rows + 1)
        answer = encrypted_release(result.names, result.types, result.rows, guarded, partitions=1,
                                   dataset=guarded.dataset, max_rows=guarded.max_rows)
        released[served.dialect] = (answer.groups, answer.keys, answer.withheld, answer.measures, answer.truncated)
    assert released["duckdb"][1] and released["duckdb"][2], "some groups should be released and some withheld"
    assert released["postgres"] == released["duckdb"]


def _guarded(served, sql: str, grant, *, encrypted: bool = False):
    column_types = {table: dict(served.columns(table)) for table in SERVED}
    return guard(sql, grant, district=XUANWU, department="xuanwu-fgw", engine_dialect=served.dialect,
                 column_types=column_types, encrypted=encrypted)


def _released(served, sql: str, policy, grant_name: str, *, auditor: Auditor | None = None):
    """The wire table, the counts withheld per rule and the truncation of ``sql`` released from ``served``
    (with ``auditor``, audited against what it released before)."""
    grant = dataclasses.replace(policy, min_max={"employees": ("MIN", "MAX"), "revenue": ("MAX",)},
                                **GRANTS[grant_name])
    released = run(served, _guarded(served, sql, grant), timeout_s=60, auditor=auditor)
    return (encode_table(released.names, released.types, released.rows, withheld=released.withheld,
                         rolled_up=released.rolled_up), released.counts, released.truncated)


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
    "SELECT 1; SELECT 2",  # a cursor takes one statement
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
