"""The DuckDB engine: a read-only database file, locked down, with pooled connections.

The lockdown order is the verified recipe: extension loading and replacement
scans off, resource limits set, external access off, the local file system
disabled, and the configuration locked last so no query can undo any of it.
The guard refuses metadata functions, temp objects and macros; the lockdown
is the second layer for anything that slips past it.

DuckDB 2.0 scopes ``max_execution_time`` and ``python_enable_replacements`` per
connection: a plain SET changes only the connection that runs it, and every
cursor (the pool's connections) starts from the global value. They are set
GLOBAL, before the lock, and read back from every connection that will run a
query, pooled or made to replace one after an error; a connection without
them is never pooled.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb

from dsbroker.errors import DsbrokerError, ExecutionError
from sandbox.engine.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineLimits:
    """Resource limits applied to the engine at start-up."""

    memory_limit: str = "2GB"
    threads: int = 2
    max_execution_ms: int = 120_000
    pool_size: int = 4


@dataclass(frozen=True)
class EngineResult:
    """Rows of one query, with column names and engine type names."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool
    micros: int


def lockdown_statements(limits: EngineLimits) -> list[str]:
    """The SET statements that lock a connection down, in the order they must run."""
    return [
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET allow_persistent_secrets = false",
        "SET GLOBAL python_enable_replacements = false",
        f"SET memory_limit = '{_quoted(limits.memory_limit)}'",
        f"SET threads = {int(limits.threads)}",
        f"SET GLOBAL max_execution_time = {int(limits.max_execution_ms)}",
        "SET max_temp_directory_size = '0B'",
        "SET enable_external_access = false",
        "SET disabled_filesystems = 'LocalFileSystem'",
        "SET lock_configuration = true",
    ]


_FILE_PROBE = "/etc/hostname"
# Settings whose values prove the lockdown holds, checked after applying it.
_REQUIRED_SETTINGS = {
    "enable_external_access": "false",
    "lock_configuration": "true",
    "autoload_known_extensions": "false",
    "autoinstall_known_extensions": "false",
    "allow_community_extensions": "false",
    "max_temp_directory_size": "0 bytes",
}


def _connection_problems(connection: duckdb.DuckDBPyConnection, limits: EngineLimits) -> list[str]:
    """The settings that do not hold on ``connection`` (each connection reads back its own values)."""
    wrong = [name for name, value in _REQUIRED_SETTINGS.items() if _setting(connection, name) != value]
    if _setting(connection, "python_enable_replacements") != "false":
        wrong.append("python_enable_replacements")
    ceiling = _setting(connection, "max_execution_time")
    # Another engine in the process may have locked the instance: a stricter ceiling is kept, none or a
    # looser one is refused.
    if not ceiling.isdigit() or not 0 < int(ceiling) <= limits.max_execution_ms:
        wrong.append("max_execution_time")
    return wrong


def _lock_down(database: duckdb.DuckDBPyConnection, limits: EngineLimits) -> None:
    """Apply the lockdown, then verify it; refuse to serve from an instance that is not locked down.

    DuckDB shares one database instance per file within a process, so the
    instance may already be locked (by another engine on the same file); that
    is accepted only when the settings that matter have the locked-down values.
    """
    already_locked = _setting(database, "lock_configuration") == "true"
    if not already_locked:
        for statement in lockdown_statements(limits):
            database.execute(statement)
    wrong = dict.fromkeys(_connection_problems(database, limits), "")
    # duckdb_settings() reports disabled_filesystems as empty even when it holds, so probe it instead.
    try:
        database.execute("SELECT count(*) FROM read_text(?)", [_FILE_PROBE]).fetchall()
        wrong["disabled_filesystems"] = "file read allowed"
    except duckdb.PermissionException:
        pass
    if wrong:
        database.close()
        raise DsbrokerError(f"the engine is not locked down ({', '.join(sorted(wrong))}); refusing to serve",
                            reason="ENGINE_NOT_LOCKED_DOWN")


def _setting(database: duckdb.DuckDBPyConnection, name: str) -> str:
    row = database.execute("SELECT value FROM duckdb_settings() WHERE name = ?", [name]).fetchone()
    return str(row[0]).lower() if row else ""


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
        self.limits = limits
        self.clock = clock
        self._database = duckdb.connect(str(path), read_only=True)
        _lock_down(self._database, limits)
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
        wrong = _connection_problems(cursor, self.limits)
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


def _quoted(value: str) -> str:
    return value.replace("'", "''")

