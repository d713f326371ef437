"""The DuckDB engine: a read-only database file, locked down, with pooled connections.

Every connection is checked by :mod:`sandbox.engine.duckdb_lockdown` before it runs a query: the first
when the engine starts, each pooled one before it is pooled, and each made to replace a broken one.
"""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import Callable

import duckdb

from dsbroker.errors import DsbrokerError, ExecutionError
from sandbox.engine.duckdb_lockdown import connection_problems, lock_down
from sandbox.engine.interface import EngineLimits, EngineResult
from sandbox.engine.watchdog import Watchdog

log = logging.getLogger(__name__)


class DuckDBEngine:
    """Runs SQL on a read-only DuckDB file through a fixed pool of locked-down connections."""

    dialect = "duckdb"

    def __init__(self, path: str | Path, limits: EngineLimits = EngineLimits(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` (seconds, monotonic) decides whether a query finished within its time limit; the
        watchdog interrupts late queries on its own, and a result that comes back late is not released
        either, however the watchdog's thread was scheduled (tests pass a clock they move)."""
        path = Path(path)
        if not path.is_file():
            raise DsbrokerError(f"data file {path} does not exist", reason="DATA_FILE_MISSING")
        self.path = path
        self.name = path.stem
        stat = path.stat()
        self._data_version = f"{stat.st_size}:{stat.st_mtime_ns}"
        self.limits = limits
        self.clock = clock
        self._database = duckdb.connect(str(path), read_only=True)
        lock_down(self._database, limits)
        # Cursors are further connections to the same database instance; each is checked before it is pooled.
        self._pool: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
        try:
            for _ in range(limits.pool_size):
                self._pool.put(self._checked_cursor())
        except DsbrokerError:
            while not self._pool.empty():
                self._pool.get_nowait().close()
            self._database.close()
            raise
        self._watchdog = Watchdog()
        self._closed = False

    def data_version(self) -> str:
        """The data file's size and modification time when the engine opened it."""
        return self._data_version

    def data_stamp(self) -> str | None:
        """The data file as it is now: device, inode, size, modification and change times. The file is open
        read-only, and DuckDB lets no process open it for writing meanwhile; a write past DuckDB, or a file put in
        its place, changes the stamp. None while no file is at the path (moved away, the engine still serves the
        one it opened): nothing vouches for the data then."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"

    def tables(self) -> set[str]:
        """The tables in the file, as "schema.table"."""
        connection = self._pool.get()
        try:
            rows = connection.execute(
                "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()
        finally:
            self._pool.put(connection)
        return {row[0] for row in rows}

    def columns(self, table: str) -> list[tuple[str, str]]:
        """The (name, type) of each column of ``table`` ("schema.table"), in table order."""
        schema, name = table.split(".", 1)
        connection = self._pool.get()
        try:
            return connection.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
                "ORDER BY column_index", [schema, name]).fetchall()
        finally:
            self._pool.put(connection)

    def execute(self, sql: str, *, timeout_s: float, max_rows: int) -> EngineResult:
        """Run ``sql``, interrupting it after ``timeout_s``; return at most ``max_rows`` rows.

        Engine messages are logged here and never returned: they can quote data.
        """
        try:
            connection = self._pool.get(timeout=max(timeout_s, 0.001))
        except queue.Empty:
            raise DsbrokerError("the sandbox is busy; try again", reason="SANDBOX_BUSY") from None
        started = time.perf_counter()
        deadline = self.clock() + timeout_s
        token = self._watchdog.arm(timeout_s, connection.interrupt)
        clean = False
        try:
            cursor = connection.execute(sql)
            names = [d[0] for d in cursor.description]
            types = [str(d[1]) for d in cursor.description]
            rows = cursor.fetchmany(max_rows + 1)
            clean = self._watchdog.disarm(token)
        except duckdb.InterruptException:
            raise _timeout() from None
        except duckdb.OutOfMemoryException as error:
            # Spilling is refused (duckdb_lockdown): past memory_limit the query fails, and the others go on.
            log.warning("engine out of memory (memory_limit %s): %s", self.limits.memory_limit, error)
            raise DsbrokerError(f"the query needs more memory than the sandbox's memory_limit "
                                f"({self.limits.memory_limit}) allows", reason="QUERY_OUT_OF_MEMORY",
                                memory_limit=self.limits.memory_limit) from None
        except duckdb.Error as error:
            log.warning("engine error (%s): %s", type(error).__name__, error)
            raise ExecutionError("the engine could not run the query", error_class=type(error).__name__) from None
        finally:
            self._watchdog.disarm(token)
            self._release(connection, clean)
        if self.clock() > deadline:  # finished, but after its time: the caller's deadline has passed
            raise _timeout()
        micros = int((time.perf_counter() - started) * 1e6)
        return EngineResult(names, types, rows[:max_rows], len(rows) > max_rows, micros)

    def _checked_cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the instance, with every setting read back from it; refused otherwise."""
        cursor = self._database.cursor()
        wrong = connection_problems(cursor, self.limits)
        if wrong:
            cursor.close()
            raise DsbrokerError(f"a connection of the engine is not locked down ({', '.join(sorted(wrong))}); "
                                "refusing to serve it", reason="ENGINE_NOT_LOCKED_DOWN")
        return cursor

    def _release(self, connection: duckdb.DuckDBPyConnection, clean: bool) -> None:
        if not clean:  # after an error or a late interrupt, make sure the connection is usable again
            try:
                connection.execute("SELECT 1").fetchall()
            except duckdb.Error:
                try:
                    connection = self._checked_cursor()
                except (DsbrokerError, duckdb.Error):
                    # The pool shrinks rather than serve an unchecked connection; at none, SANDBOX_BUSY.
                    log.error("could not replace a broken engine connection with a locked-down one")
                    return
        self._pool.put(connection)

    def close(self) -> None:
        """Close every connection and the database."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        while not self._pool.empty():
            self._pool.get_nowait().close()
        self._database.close()


def _timeout() -> DsbrokerError:
    return DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
