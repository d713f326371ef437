"""An in-memory DuckDB that holds released cells and lookup columns and nothing else, for a two-level query's
outer query.

It is made for one answer and closed after it. The tables are written first, then the connection is locked
down exactly as the owner's engine is (``duckdb_lockdown``: no extensions, no file system, no external access,
resource limits, the configuration locked) and checked; only then does the outer query run, under the time
left to the answer. So even an outer query that slipped past the guard could read only what disclosure
control released (withheld cells are NULL here) and the lookups' public codes: the owner's data is in
another database the outer query has no name for. A division by zero gives NULL here rather than an error,
as it does for a withheld cell, so that no outer query fails on a released cell where it succeeds on a
withheld one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import duckdb
import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError
from sandbox.engine.duckdb_lockdown import lock_down
from sandbox.engine.interface import EngineLimits, EngineResult
from sandbox.engine.watchdog import Watchdog

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per INSERT statement: one statement per row is slow, one for all too large
# The in-memory engine's own limits: the tables are at most a few grants' caps of cells, and the outer query
# reads nothing else.
LIMITS = EngineLimits(memory_limit="1GB", threads=1, max_execution_ms=120_000, pool_size=1)
_WATCHDOG: Watchdog | None = None


@dataclass(frozen=True)
class MemoryTable:
    """One table to hold: its name, its columns' names and DuckDB types, and its rows."""

    name: str
    columns: tuple[tuple[str, str], ...]
    rows: list[tuple]


def run_on_released(sql: str, tables: list[MemoryTable], *, timeout_s: float, max_rows: int,
                    dataset: str) -> EngineResult:
    """Hold ``tables`` in a new in-memory DuckDB, lock it down, and run ``sql`` on them within ``timeout_s``;
    at most ``max_rows`` rows (flagged truncated). A failure is OUT_OF_RANGE ``OUTER_QUERY_FAILED``, whose
    message says nothing of the values (it could only be about released ones: nothing else is here)."""
    deadline = time.monotonic() + timeout_s
    connection = duckdb.connect(":memory:")
    try:
        for table in tables:
            _write(connection, table)
        connection.execute("SET error_on_division_by_zero = false")
        lock_down(connection, LIMITS)  # closes the connection and raises when it does not hold
        if connection.execute("SELECT current_setting('error_on_division_by_zero')").fetchone() != (False,):
            raise DsbrokerError("the engine is not locked down (error_on_division_by_zero); refusing to serve",
                                reason="ENGINE_NOT_LOCKED_DOWN")
        left = deadline - time.monotonic()
        if left <= 0:
            raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
        started = time.perf_counter()
        token = _watchdog().arm(left, connection.interrupt)
        try:
            cursor = connection.execute(sql)
            names = [d[0] for d in cursor.description]
            types = [str(d[1]) for d in cursor.description]
            rows = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT") from None
        except duckdb.Error as error:
            log.warning("outer query failed (%s): %s", type(error).__name__, error)
            raise DsbrokerError("the outer query could not be computed on the released cells (a value out of "
                                "range); compute less at once, or in a wider type", reason="OUTER_QUERY_FAILED",
                                table=dataset) from None
        finally:
            _watchdog().disarm(token)
        if time.monotonic() > deadline:
            raise DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
        micros = int((time.perf_counter() - started) * 1e6)
        return EngineResult(names, types, [tuple(_finite(v) for v in row) for row in rows[:max_rows]],
                            len(rows) > max_rows, micros)
    finally:
        connection.close()


def _write(connection: duckdb.DuckDBPyConnection, table: MemoryTable) -> None:
    """CREATE TABLE and INSERT, written with sqlglot; values go in as parameters, never as SQL text."""
    schema = exp.Schema(this=exp.to_table(table.name), expressions=[
        exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(kind, dialect="duckdb"))
        for name, kind in table.columns])
    connection.execute(exp.Create(this=schema, kind="TABLE").sql(dialect="duckdb"))
    width = len(table.columns)
    for start in range(0, len(table.rows), BATCH_ROWS):
        batch = table.rows[start:start + BATCH_ROWS]
        values = exp.values([tuple(exp.Placeholder() for _ in range(width)) for _ in batch])
        insert = exp.Insert(this=exp.to_table(table.name), expression=values)
        connection.execute(insert.sql(dialect="duckdb"), [value for row in batch for value in row])


def _finite(value):
    """An infinite or undefined double is no value: NULL, as the one-level release plan gives it."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _watchdog() -> Watchdog:
    global _WATCHDOG
    if _WATCHDOG is None:
        _WATCHDOG = Watchdog()
    return _WATCHDOG
