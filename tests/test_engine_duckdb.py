"""The DuckDB engine: lockdown holds on every pooled connection, deadlines interrupt, rows are capped."""

from __future__ import annotations

import threading

import duckdb
import pytest

from dsbroker.errors import DsbrokerError
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.duckdb_lockdown import lockdown_statements
from sandbox.engine.interface import EngineLimits

HEAVY = "SELECT count(*) FROM range(100000000000) a"


@pytest.fixture(scope="module")
def engine(demo_db):
    engine = DuckDBEngine(demo_db, EngineLimits(pool_size=2))
    yield engine
    engine.close()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "COPY (SELECT 1) TO '/tmp/dsbroker-engine-leak.csv'",
    "ATTACH '/tmp/dsbroker-engine-other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "CREATE TABLE tax.x AS SELECT 1",
])
def test_lockdown_refuses_on_every_pooled_connection(engine, sql):
    for _ in range(engine.limits.pool_size + 1):
        with pytest.raises(DsbrokerError) as caught:
            engine.execute(sql, timeout_s=5, max_rows=10)
        assert caught.value.reason == "EXECUTION_FAILED"
        assert "passwd" not in caught.value.message and "root" not in caught.value.message


def test_metadata_functions_stay_callable_so_the_guard_must_refuse_them(engine):
    # Documented DuckDB behaviour the guard relies on refusing: lockdown does not hide these.
    rows = engine.execute("SELECT current_setting('lock_configuration')", timeout_s=5, max_rows=1).rows
    assert rows == [(True,)]


def test_deadline_interrupts_and_the_connection_is_reused(engine):
    with pytest.raises(DsbrokerError) as caught:
        engine.execute(HEAVY, timeout_s=0.2, max_rows=1)
    assert caught.value.reason == "QUERY_TIMEOUT"
    for _ in range(engine.limits.pool_size):
        assert engine.execute("SELECT 42", timeout_s=5, max_rows=1).rows == [(42,)]


def test_rows_are_capped_and_truncation_flagged(engine):
    result = engine.execute("SELECT street_code FROM tax.declarations GROUP BY 1", timeout_s=5, max_rows=5)
    assert len(result.rows) == 5 and result.truncated
    result = engine.execute("SELECT 1", timeout_s=5, max_rows=5)
    assert not result.truncated


def test_concurrent_queries_share_the_pool(engine):
    results, errors = [], []

    def run():
        try:
            results.append(engine.execute("SELECT COUNT(*) FROM tax.declarations", timeout_s=10, max_rows=1).rows)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 and len({r[0][0] for r in results}) == 1


def test_an_unlocked_instance_is_locked_or_refused(tmp_path):
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    other = duckdb.connect(str(path), read_only=True)  # another user of the same instance in-process
    engine = DuckDBEngine(path)
    with pytest.raises(duckdb.Error):
        other.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    engine.close()
    other.close()


SETTINGS_SQL = "SELECT current_setting('max_execution_time'), current_setting('python_enable_replacements')"


def test_every_pooled_connection_runs_under_the_per_connection_limits(engine):
    # DuckDB scopes these two per connection: set on the parent only, pooled cursors ran without them.
    for _ in range(engine.limits.pool_size * 2):  # the pool is first in, first out: each cursor twice
        assert engine.execute(SETTINGS_SQL, timeout_s=5, max_rows=1).rows == [(engine.limits.max_execution_ms, False)]


def test_a_replacement_connection_is_checked_before_it_joins_the_pool(tmp_path):
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    engine = DuckDBEngine(path, EngineLimits(pool_size=1, max_execution_ms=5000))
    try:
        broken = engine._pool.get()
        broken.close()  # as after an error that leaves the connection unusable
        engine._release(broken, clean=False)
        assert engine.execute(SETTINGS_SQL, timeout_s=5, max_rows=1).rows == [(5000, False)]
    finally:
        engine.close()


@pytest.mark.parametrize("loose", ["max_execution_time", "python_enable_replacements"])
def test_an_instance_locked_without_the_per_connection_limits_is_refused(tmp_path, loose):
    # Someone else in the process locked the instance, setting the two only on their own connection.
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    other = duckdb.connect(str(path), read_only=True)
    for statement in lockdown_statements(EngineLimits()):
        if loose in statement:
            statement = statement.replace("SET GLOBAL", "SET")
        other.execute(statement)
    with pytest.raises(DsbrokerError) as caught:
        DuckDBEngine(path)
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN" and loose in caught.value.message
    other.close()


def test_a_result_that_comes_back_after_its_time_limit_is_not_released(demo_db):
    # Whatever the watchdog's thread managed: on the engine's clock the query took longer than allowed.
    ticks = iter([0.0, 10.0, 10.0, 20.0])
    engine = DuckDBEngine(demo_db, EngineLimits(pool_size=1), clock=lambda: next(ticks))
    try:
        with pytest.raises(DsbrokerError) as caught:
            engine.execute("SELECT 42", timeout_s=5, max_rows=1)
        assert caught.value.reason == "QUERY_TIMEOUT"
        assert engine.execute("SELECT 42", timeout_s=15, max_rows=1).rows == [(42,)]
    finally:
        engine.close()


def generated_table(tmp_path, rows: int = 2_000_000):
    """A DuckDB file with one table of ``rows`` distinct keys: grouping by the key needs far more memory than
    a few megabytes, counting its rows hardly any."""
    path = tmp_path / "owner.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE t AS SELECT i, md5(CAST(i AS VARCHAR)) AS k FROM range({rows}) r(i)")
    return path


def test_a_query_past_the_memory_limit_is_refused_and_the_engine_serves_on(tmp_path):
    path = generated_table(tmp_path)
    engine = DuckDBEngine(path, EngineLimits(memory_limit="16MB", pool_size=1))
    try:
        with pytest.raises(DsbrokerError) as caught:
            engine.execute("SELECT k, count(*) FROM t GROUP BY k", timeout_s=60, max_rows=10)
        assert caught.value.reason == "QUERY_OUT_OF_MEMORY"
        assert caught.value.metadata == {"memory_limit": "16MB"}
        assert "memory_limit (16MB)" in caught.value.message and "MiB" not in caught.value.message
        # Spilling is refused: nothing was written beside the data file (DuckDB's default temp directory).
        assert sorted(p.name for p in tmp_path.iterdir()) == ["owner.duckdb"]
        assert engine.execute("SELECT count(*) FROM t", timeout_s=60, max_rows=1).rows == [(2_000_000,)]
    finally:
        engine.close()


# Each: a setting another user of the same file in the process changed before locking the instance.
LOOSENED = {
    "memory_limit": ("SET memory_limit = '2GB'", "SET memory_limit = '64GB'"),
    "threads": ("SET threads = 2", "SET threads = 16"),
    "temp_directory": ("SET temp_directory = ''", "SET temp_directory = '{tmp}'"),
    "max_temp_directory_size": ("SET max_temp_directory_size = '0B'", "SET max_temp_directory_size = '10GB'"),
}


@pytest.mark.parametrize("setting", sorted(LOOSENED))
def test_an_instance_whose_memory_or_spilling_was_loosened_from_outside_is_refused(tmp_path, setting):
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    other = duckdb.connect(str(path), read_only=True)
    shipped, loosened = LOOSENED[setting]
    statements = lockdown_statements(EngineLimits())
    assert shipped in statements
    for statement in statements:
        other.execute(loosened.format(tmp=tmp_path) if statement == shipped else statement)
    with pytest.raises(DsbrokerError) as caught:
        DuckDBEngine(path)
    assert caught.value.reason == "ENGINE_NOT_LOCKED_DOWN" and setting in caught.value.message
    other.close()


def test_a_stricter_memory_limit_set_from_outside_is_kept(tmp_path):
    # Another engine on the same file locked the instance with less memory and fewer threads: that holds.
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    other = duckdb.connect(str(path), read_only=True)
    for statement in lockdown_statements(EngineLimits(memory_limit="512MB", threads=1)):
        other.execute(statement)
    engine = DuckDBEngine(path, EngineLimits(memory_limit="2GB", threads=2, pool_size=1))
    try:
        assert engine.execute("SELECT current_setting('threads')", timeout_s=5, max_rows=1).rows == [(1,)]
    finally:
        engine.close()
        other.close()


@pytest.mark.parametrize("memory_limit", ["lots", "-1", "none"])
def test_a_memory_limit_that_is_not_an_amount_is_refused_before_serving(tmp_path, memory_limit):
    path = tmp_path / "owner.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    with pytest.raises(DsbrokerError) as caught:
        DuckDBEngine(path, EngineLimits(memory_limit=memory_limit))
    assert caught.value.reason == "CONFIG_INVALID" and "memory_limit" in caught.value.message


def test_why_spilling_is_refused_a_spill_needs_the_file_system_which_would_open_the_data_file(tmp_path):
    # The DuckDB behaviour the lockdown's choice rests on (README, The sandbox's lockdown): with the local file
    # system disabled a spill fails anyway; with it enabled and external access off, a query reads the data
    # file whole, the tables the sandbox does not serve included.
    path = generated_table(tmp_path)
    spill = tmp_path / "spill"
    spill.mkdir()
    for file_system_off in (True, False):
        con = duckdb.connect(str(path), read_only=True)
        try:
            memory = "64MB" if file_system_off else "1GB"  # past 64MB a spill; the file read needs its size
            for statement in (f"SET memory_limit = '{memory}'", f"SET temp_directory = '{spill}'",
                              "SET max_temp_directory_size = '1GB'", "SET enable_external_access = false",
                              *(["SET disabled_filesystems = 'LocalFileSystem'"] if file_system_off else []),
                              "SET lock_configuration = true"):
                con.execute(statement)
            if file_system_off:
                with pytest.raises(duckdb.PermissionException):
                    con.execute("SELECT k, count(*) FROM t GROUP BY k").fetchall()
            else:
                size = con.execute("SELECT octet_length(content) FROM read_blob(?)", [str(path)]).fetchone()[0]
                assert size == path.stat().st_size
        finally:
            con.close()
