"""The Spark SQL engine, on a local Spark session (one for the run): the cells it releases are DuckDB's, cell by
cell (the threshold's, the dominance rules' and the released-cell auditor's withholdings, noise mode's bounded
cells and an encrypted answer's groups included); sums of money come back exact, as integers; a deadline
cancels the query's jobs and the session serves again; rows are capped; every lockdown probe (files,
programs, settings, user functions and jars, writes, other schemas) is refused; and a session that could do
more is refused at start (ENGINE_NOT_LOCKED_DOWN, naming what is wrong)."""

from __future__ import annotations

import time

import pytest

from dsbroker.errors import DsbrokerError
from sandbox.demo.data import DEMO_DATASETS
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.engine.spark_engine import SparkEngine
from sandbox.engine.spark_lockdown import session_problems
from tests.conftest import parquet_tables
from tests.engine_cells import (FEWER_CASES, NOISY, assert_audited_alike, assert_encrypted_alike,
                                assert_noisy_alike, assert_released_alike, assert_withheld_alike)

# A query that runs for minutes on any machine and reads no table: the deadline must stop it.
ENDLESS = "SELECT SUM(HASH(id)) FROM RANGE(100000000000)"


@pytest.fixture(scope="module")
def engine(spark_engine):
    return spark_engine


@pytest.fixture(scope="module")
def reference(small_demo):
    engine = DuckDBEngine(small_demo, EngineLimits(pool_size=1))
    yield engine
    engine.close()


def test_it_serves_the_served_tables_with_their_spark_types(engine):
    assert engine.tables() == set(DEMO_DATASETS)
    columns = dict(engine.columns("tax.declarations"))
    assert columns["taxpayer_id"] == "string" and columns["period"] == "date" and columns["revenue"] == "bigint"
    assert engine.columns("tax.taxpayers") == []  # not served: not even registered


@pytest.mark.parametrize("grant_name, title, sql", FEWER_CASES,
                         ids=[f"{grant}: {title}" for grant, title, _sql in FEWER_CASES])
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


def test_sums_of_money_are_exact_integers_past_what_a_bigint_holds(engine):
    """The guard adds integers up as DECIMAL(19, 0) on Spark (its BIGINT sum would overflow); the engine gives
    the DECIMAL(p, 0) back as an int, named HUGEINT as DuckDB names its integer sums."""
    result = engine.execute("SELECT SUM(CAST(v AS DECIMAL(19, 0))), COUNT(*), MIN(d), "
                            "date_trunc('MONTH', CAST(MIN(d) AS TIMESTAMP)) FROM (SELECT 9223372036854775807 AS v, "
                            "DATE '2024-03-05' AS d FROM RANGE(3))", timeout_s=60, max_rows=1)
    assert result.types == ["HUGEINT", "BIGINT", "DATE", "TIMESTAMP"]
    total, count, first, month = result.rows[0]
    assert total == 3 * (2**63 - 1) and type(total) is int and count == 3
    assert str(first) == "2024-03-05" and (month.year, month.month, month.day, month.hour) == (2024, 3, 1, 0)


def test_a_deadline_cancels_the_querys_jobs_and_the_session_serves_again(engine):
    started = time.monotonic()
    with pytest.raises(DsbrokerError) as caught:
        engine.execute(ENDLESS, timeout_s=1.0, max_rows=1)
    assert caught.value.reason == "QUERY_TIMEOUT"
    assert time.monotonic() - started < 60, "the cancel should stop the query long before it would end"
    # Stopped in Spark, not left running there. The tracker learns of a job's end from Spark's listener bus,
    # which runs apart from the query's thread: read until it has caught up (long past a loaded machine's lag).
    tracker = engine.session.sparkContext.statusTracker()
    caught_up = time.monotonic() + 60
    while tracker.getActiveJobsIds() and time.monotonic() < caught_up:
        time.sleep(0.1)
    assert tracker.getActiveJobsIds() == []
    assert engine.execute("SELECT 42", timeout_s=60, max_rows=1).rows == [(42,)]


def test_rows_are_capped_and_truncation_flagged(engine):
    capped = engine.execute("SELECT id FROM RANGE(100) ORDER BY id", timeout_s=60, max_rows=10)
    assert capped.truncated and [row[0] for row in capped.rows] == list(range(10))
    whole = engine.execute("SELECT id FROM RANGE(100) ORDER BY id", timeout_s=60, max_rows=100)
    assert not whole.truncated and len(whole.rows) == 100


# Each reaches past the served tables, changes the session or writes; each is refused, with the same message.
PROBES = [
    "SELECT COUNT(*) FROM parquet.`{declarations}`",  # files: SQL on files is off
    "SELECT * FROM json.`/etc/hostname`",
    "SELECT reflect('java.lang.System', 'getProperty', 'user.home')",  # programs: the JVM's methods
    "SELECT java_method('java.lang.Runtime', 'getRuntime')",
    "SELECT try_reflect('java.lang.System', 'getenv', 'HOME')",
    "SELECT input_file_name() FROM tax.streets",  # the files behind a served table
    "SELECT _metadata.file_path FROM tax.streets",
    "SET spark.sql.runSQLOnFiles = true",  # settings
    "RESET",
    "ADD JAR /tmp/dsbroker-probe.jar",  # user functions, jars and files
    "ADD FILE /etc/hostname",
    "CREATE TEMPORARY FUNCTION probe AS 'java.lang.String'",
    "CREATE FUNCTION tax.probe AS 'java.lang.String'",
    "INSERT INTO tax.streets SELECT * FROM tax.streets",  # writes
    "INSERT OVERWRITE DIRECTORY '/tmp/dsbroker-probe' SELECT * FROM tax.streets",
    "CREATE TABLE tax.leak AS SELECT * FROM tax.streets",
    "CACHE TABLE tax.streets",
    "CREATE TEMPORARY VIEW leak AS SELECT 1",
    "DROP TABLE tax.streets",
    "SELECT company_name FROM tax.taxpayers",  # other schemas and tables: never registered
    "SELECT * FROM default.anything",
    "SHOW TABLES",
    "SELECT 1; SELECT 2",  # one statement only
]


@pytest.mark.parametrize("sql", PROBES)
def test_each_lockdown_probe_is_refused_without_the_engines_message(sql, engine, small_demo):
    text = sql.format(declarations=parquet_tables(small_demo)["tax.declarations"])
    with pytest.raises(DsbrokerError) as caught:
        engine.execute(text, timeout_s=60, max_rows=10)
    assert caught.value.reason == "EXECUTION_FAILED"
    assert caught.value.message == "the engine could not run the query"
    assert engine.execute("SELECT COUNT(*) FROM tax.streets", timeout_s=60, max_rows=1).rows[0][0] > 0


def test_the_probes_left_the_session_as_it_was(engine):
    assert engine.session.conf.get("spark.sql.runSQLOnFiles") == "false"
    assert engine.tables() == set(DEMO_DATASETS)
    listed = {table.name for table in engine.session.catalog.listTables(dbName="tax")}
    assert listed == {name.split(".")[1] for name in DEMO_DATASETS}


@pytest.mark.parametrize("widen, undo, wrong", [
    (lambda session: session.conf.set("spark.sql.runSQLOnFiles", "true"),
     lambda session: session.conf.set("spark.sql.runSQLOnFiles", "false"), "spark.sql.runSQLOnFiles is not false"),
    (lambda session: session.conf.set("spark.sql.runSQLOnFiles", "true"),
     lambda session: session.conf.set("spark.sql.runSQLOnFiles", "false"), "SQL on files allowed"),
    (lambda session: session.conf.set("spark.sql.ansi.enabled", "false"),
     lambda session: session.conf.set("spark.sql.ansi.enabled", "true"), "spark.sql.ansi.enabled is not true"),
    (lambda session: session.range(1).createOrReplaceTempView("leak"),
     lambda session: session.catalog.dropTempView("leak"), "the catalog holds tables not served: leak"),
])
def test_a_session_that_could_do_more_is_found_out(engine, widen, undo, wrong):
    """The check every start runs, on the session widened by other code in the process."""
    widen(engine.session)
    try:
        assert wrong in session_problems(engine.session, engine.limits, engine.paths, engine.probe)
    finally:
        undo(engine.session)
    assert session_problems(engine.session, engine.limits, engine.paths, engine.probe) == []


def test_a_catalog_with_more_than_the_served_tables_stops_the_start(engine, small_demo):
    engine.session.range(1).createOrReplaceTempView("leak")
    try:
        with pytest.raises(DsbrokerError) as caught:
            SparkEngine(parquet_tables(small_demo), EngineLimits(memory_limit="1GB", threads=2, pool_size=2))
        assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
        assert "the catalog holds tables not served: leak" in caught.value.message
    finally:
        engine.session.catalog.dropTempView("leak")
    assert engine.execute("SELECT COUNT(*) FROM tax.streets", timeout_s=60, max_rows=1).rows[0][0] > 0


def test_a_memory_cap_other_than_the_sessions_is_refused(small_demo):
    with pytest.raises(DsbrokerError) as caught:
        SparkEngine(parquet_tables(small_demo), EngineLimits(memory_limit="3GB", threads=2, pool_size=2))
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN"
    assert "spark.executor.memory is not 3g" in caught.value.message


def test_the_auditors_query_over_combinations_of_values_reads_the_direct_querys_blocks(engine, reference, policy):
    """Spark takes the auditor's query over combinations of values as DuckDB does (arrays counted from 0, <=> to
    match NULLs): the blocks are its direct query's, and DuckDB's."""
    import random

    from tests.block_differential import blocks_read, random_coverages

    coverages = random_coverages(engine, policy, random.Random(1), 12)
    direct = blocks_read(engine, coverages, by_values=False)
    assert direct, "the coverages keep no row: the comparison would prove nothing"
    assert blocks_read(engine, coverages, by_values=True) == direct
    assert blocks_read(reference, random_coverages(reference, policy, random.Random(1), 12), by_values=True) == direct
