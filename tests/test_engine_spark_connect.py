"""The Spark SQL engine on a real Spark Connect server (one for the module, started from the pyspark package on a
free port of 127.0.0.1 and stopped after): the released cells are DuckDB's; each lockdown probe is refused; a
session whose settings could do more (SQL on files, another catalog, a user function, a view another session
left) is refused at start, naming what is wrong; a deadline interrupts the query's operations by their tag
and the session serves again; rows are capped; and ``sandbox serve`` with ``spark_remote`` answers as a DuckDB
sandbox does, each behind a broker over gRPC."""

from __future__ import annotations

import os

import time

import pytest

from broker.client.sdk import BrokerClient
from broker.dev.spark_servers import connect_server
from broker.server import start_broker
from dsbroker.errors import DsbrokerError
from sandbox.demo.data import DEMO_DATASETS
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.engine.spark_engine import SparkEngine
from sandbox.server import start_sandbox
from tests.conftest import GRANT, broker_settings_for, client_tls, parquet_tables, token_for
from tests.engine_cells import FEWER_CASES, assert_released_alike, assert_withheld_alike
from tests.test_engine_spark import ENDLESS, PROBES
from tests.test_sandbox_postgres import QUERIES, TIMEOUT_S, _grants
from tests.test_sandbox_spark import _settings

LIMITS = EngineLimits(memory_limit="1GB", threads=2, pool_size=2)
# The server operator's settings, locked down as the engine verifies (Spark's own defaults for the rest).
LOCKED_DOWN = {"spark.sql.runSQLOnFiles": "false", "spark.sql.catalogImplementation": "in-memory",
               "spark.sql.ansi.enabled": "true", "spark.ui.enabled": "false", "spark.driver.memory": "1g",
               "spark.executor.memory": "1g", "spark.sql.shuffle.partitions": "2"}
# A few accepted fixtures under the grant with the threshold and both dominance rules, and a ROLLUP.
CASES = [case for case in FEWER_CASES if case[0] == "k2-dominance-p"][:3] + [
    case for case in FEWER_CASES if "ROLLUP" in case[2].upper()][:1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's Spark Connect server's URL; the server is stopped when the module ends, also on failure."""
    with connect_server(LOCKED_DOWN, directory=tmp_path_factory.mktemp("spark-connect")) as url:
        try:
            yield url
        finally:
            # pyspark marks the process as a Connect client once a remote session is made (these variables), and
            # then makes no local session: the run's other Spark tests need one, as a sandbox of its own would.
            for name in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
                os.environ.pop(name, None)


@pytest.fixture(scope="module")
def engine(server, small_demo):
    engine = SparkEngine(parquet_tables(small_demo), LIMITS, remote=server)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference(small_demo):
    engine = DuckDBEngine(small_demo, EngineLimits(pool_size=1))
    yield engine
    engine.close()


@pytest.fixture
def other_session(server):
    """A Spark Connect session of its own on the module's server, as another client (or the operator) has."""
    from pyspark.sql import SparkSession

    session = SparkSession.Builder().remote(server).create()
    yield session
    session.stop()


def test_it_serves_the_served_tables_over_spark_connect(engine):
    assert type(engine.session).__module__.startswith("pyspark.sql.connect")
    assert engine.tables() == set(DEMO_DATASETS)
    columns = dict(engine.columns("tax.declarations"))
    assert columns["taxpayer_id"] == "string" and columns["period"] == "date" and columns["revenue"] == "bigint"
    assert engine.data_version().startswith("spark:")


@pytest.mark.parametrize("grant_name, title, sql", CASES, ids=[f"{grant}: {title}" for grant, title, _sql in CASES])
def test_the_released_cells_are_duckdbs_over_spark_connect(grant_name, title, sql, policy, engine, reference):
    assert_released_alike(engine, reference, policy, grant_name, sql)


def test_the_withheld_cells_are_duckdbs_over_spark_connect(policy, engine, reference):
    assert_withheld_alike(engine, reference, policy, "k3-dominance", "dominance")


def test_sums_of_money_are_exact_integers_over_spark_connect(engine):
    result = engine.execute("SELECT SUM(CAST(v AS DECIMAL(19, 0))), COUNT(*), MIN(d) FROM (SELECT "
                            "9223372036854775807 AS v, DATE '2024-03-05' AS d FROM RANGE(3))", timeout_s=60, max_rows=1)
    assert result.types == ["HUGEINT", "BIGINT", "DATE"]
    total, count, first = result.rows[0]
    assert total == 3 * (2**63 - 1) and type(total) is int and count == 3 and str(first) == "2024-03-05"


def test_a_deadline_interrupts_the_querys_operations_and_the_session_serves_again(engine):
    started = time.monotonic()
    with pytest.raises(DsbrokerError) as caught:
        engine.execute(ENDLESS, timeout_s=1.0, max_rows=1)
    assert caught.value.reason == "QUERY_TIMEOUT"
    # The query would run for minutes: only the server's interrupt of its tag ends it this soon.
    assert time.monotonic() - started < 60, "the interrupt should stop the query long before it would end"
    assert engine.session.getTags() == set(), "the thread's next query must run without the late one's tag"
    assert engine.execute("SELECT 42", timeout_s=60, max_rows=1).rows == [(42,)]


def test_rows_are_capped_and_truncation_flagged_over_spark_connect(engine):
    capped = engine.execute("SELECT id FROM RANGE(100) ORDER BY id", timeout_s=60, max_rows=10)
    assert capped.truncated and [row[0] for row in capped.rows] == list(range(10))
    whole = engine.execute("SELECT id FROM RANGE(100) ORDER BY id", timeout_s=60, max_rows=100)
    assert not whole.truncated and len(whole.rows) == 100


@pytest.mark.parametrize("sql", PROBES + ["SELECT _metadata.file_path FROM tax.streets",
                                          "SELECT system.builtin.reflect('java.lang.System', 'getenv', 'HOME')",
                                          "SELECT 1)\nUNION ALL SELECT 1; SET spark.sql.ansi.enabled = false; --"])
def test_each_lockdown_probe_is_refused_over_spark_connect(sql, engine, small_demo):
    text = sql.format(declarations=parquet_tables(small_demo)["tax.declarations"])
    with pytest.raises(DsbrokerError) as caught:
        engine.execute(text, timeout_s=60, max_rows=10)
    assert caught.value.reason == "EXECUTION_FAILED"
    assert caught.value.message == "the engine could not run the query"
    assert engine.execute("SELECT COUNT(*) FROM tax.streets", timeout_s=60, max_rows=1).rows[0][0] > 0


def test_the_probes_left_the_session_and_the_server_as_they_were(engine):
    assert engine.session.conf.get("spark.sql.runSQLOnFiles") == "false"
    assert engine.session.conf.get("spark.sql.ansi.enabled") == "true"
    listed = {table.name for table in engine.session.catalog.listTables(dbName="tax")}
    assert listed == {name.split(".")[1] for name in DEMO_DATASETS}


def test_a_session_whose_runSQLOnFiles_is_true_is_refused_at_start(server, other_session, small_demo):
    """What a server whose sessions read files in SQL gives its clients: the start refuses it, and the probe
    that reads a served table's own Parquet by its path is found to succeed there."""
    other_session.conf.set("spark.sql.runSQLOnFiles", "true")
    with pytest.raises(DsbrokerError) as caught:
        SparkEngine(parquet_tables(small_demo), LIMITS, remote=server, session=other_session)
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
    assert "spark.sql.runSQLOnFiles is not false" in caught.value.message
    assert "SQL on files allowed" in caught.value.message


@pytest.mark.parametrize("widen, wrong", [
    (lambda session: session.conf.set("spark.sql.catalog.lake", "org.example.LakeCatalog"),
     "the server sets spark.sql.catalog.lake"),
    (lambda session: session.conf.set("spark.sql.ansi.enabled", "false"), "spark.sql.ansi.enabled is not true"),
    (lambda session: session.udf.register("leak", lambda value: value), "the session has user functions: leak"),
])
def test_a_session_that_could_do_more_is_refused_at_start(server, other_session, small_demo, widen, wrong):
    widen(other_session)
    with pytest.raises(DsbrokerError) as caught:
        SparkEngine(parquet_tables(small_demo), LIMITS, remote=server, session=other_session)
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN" and wrong in caught.value.message


def test_a_view_another_client_left_on_the_server_stops_the_start(server, other_session, small_demo, engine):
    """A Spark Connect server is shared by its sessions: a global temporary view one leaves is reachable from
    every other (global_temp.name), so a new engine's start refuses the server while it is there."""
    other_session.range(1).createOrReplaceGlobalTempView("leak")
    try:
        with pytest.raises(DsbrokerError) as caught:
            SparkEngine(parquet_tables(small_demo), LIMITS, remote=server)
        assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
        assert "the catalog holds tables not served: global_temp.leak" in caught.value.message
    finally:
        other_session.catalog.dropGlobalTempView("leak")
    assert engine.execute("SELECT COUNT(*) FROM tax.streets", timeout_s=60, max_rows=1).rows[0][0] > 0


def test_sandbox_serve_on_spark_connect_answers_as_duckdb_does(server, small_demo, tmp_path):
    """``spark_remote`` in the sandbox's settings, end to end: a broker over each sandbox, the same queries (the
    threshold, dominance and the auditor's withholdings among them) answered alike."""
    running, clients = [], {}
    try:
        for engine in ("duckdb", "spark"):
            state = tmp_path / engine
            state.mkdir()
            remote = {"spark_master": "", "spark_remote": server} if engine == "spark" else {}
            sandbox = start_sandbox(_settings(small_demo, engine, state, **remote))
            running.append(sandbox)
            broker = start_broker(broker_settings_for(sandbox.port, state / "broker" / "access-log.sqlite",
                                                      policies=_grants(state / "policies")))
            running.append(broker)
            clients[engine] = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls())
        assert {d.engine_dialect for d in clients["spark"].datasets()} == {"spark"}
        for sql in QUERIES:
            duck, spark = (clients[engine].query(GRANT, sql, timeout=TIMEOUT_S) for engine in ("duckdb", "spark"))
            assert duck.rows, sql
            assert (spark.columns, spark.rows, spark.withheld, spark.truncated, spark.disclosure_rules) == (
                duck.columns, duck.rows, duck.withheld, duck.truncated, duck.disclosure_rules), sql
    finally:
        for client in clients.values():
            client.close()
        for running_server in reversed(running):
            running_server.stop()


def test_a_server_that_does_not_answer_stops_the_start_within_seconds(small_demo):
    """No server on the port: the engine's first call fails after a few retries (pyspark's own would wait out
    ten minutes), as ENGINE_UNREACHABLE naming the address and never the URL's token."""
    from broker.dev.spark_servers import free_port

    started = time.monotonic()
    with pytest.raises(DsbrokerError) as caught:
        SparkEngine(parquet_tables(small_demo), LIMITS, remote=f"sc://127.0.0.1:{free_port()}/;token=secret-token")
    assert caught.value.reason == "ENGINE_UNREACHABLE"
    assert "127.0.0.1:" in caught.value.message and "secret-token" not in caught.value.message
    assert time.monotonic() - started < 60
