"""The PostgreSQL engine: the owner's own database, read through a role the owner made for the sandbox.

Every connection is checked by :mod:`sandbox.engine.postgres_lockdown` before it serves: the first, opened
alone at start so that a refusal names what is wrong, and each one the pool opens (its ``configure``
callback raises, and the pool never hands out a connection that did not pass).

A query runs in its own read-only transaction under ``SET LOCAL statement_timeout`` (the server stops it at
its deadline), wrapped in a ``LIMIT`` of one row past the cap (the server never sends more) and streamed in
chunks over the extended protocol, which takes exactly one statement. Not through a server-side cursor:
PostgreSQL never plans a cursor's query in parallel, which made the sandbox's group-by over 10M rows half as
slow again as the same SQL run directly (``scripts/bench --engine postgres``); nor as a named prepared
statement, which a served table's later change of type would leave failing on its pooled connection.
Should the server miss its own timer, the watchdog asks it to cancel the query (the driver's cancel request,
the same as ``pg_cancel_backend``); the connection is never abandoned with a query still running on it.

Rows come back as DuckDB gives them, because disclosure control and the wire read DuckDB's type names and
Python types: PostgreSQL answers ``SUM`` of integers and ``EXTRACT`` in ``numeric``, DuckDB in integers.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

import psycopg
from psycopg import errors as pg_errors
from psycopg.postgres import types as pg_types
from psycopg_pool import ConnectionPool, PoolTimeout

from dsbroker.errors import DsbrokerError, ExecutionError
from sandbox.engine.interface import EngineLimits, EngineResult
from sandbox.engine.postgres_lockdown import lock_down
from sandbox.engine.postgres_statistics import missing_statistics
from sandbox.engine.watchdog import Watchdog

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
STREAM_ROWS = 1000  # rows a chunk of a streamed answer brings (libpq's chunked mode; one by one before libpq 17)
# The server's statement_timeout stops a query at its deadline; the driver's cancel is the backup, sent
# this much later so that the two do not race on a query the server is already stopping.
CANCEL_GRACE_S = 0.25
CANCEL_TIMEOUT_S = 2.0
# PostgreSQL's names for the types a guarded query returns, as DuckDB names them (numeric is decided apart).
_DUCKDB_TYPES = {"bool": "BOOLEAN", "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "FLOAT",
                 "float8": "DOUBLE", "text": "VARCHAR", "varchar": "VARCHAR", "bpchar": "VARCHAR", "name": "VARCHAR",
                 "date": "DATE", "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMP WITH TIME ZONE"}
_NUMERIC = pg_types["numeric"].oid
_TABLES = """
    SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND has_any_column_privilege(c.oid, 'SELECT')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Per served table, the server's counts of rows written to it: an owner's change to the data changes them.
_WRITES = """
    SELECT c.oid::regclass::text, pg_stat_get_tuples_inserted(c.oid), pg_stat_get_tuples_updated(c.oid),
           pg_stat_get_tuples_deleted(c.oid) FROM pg_catalog.pg_class c
    WHERE c.oid = ANY(%s::regclass[]) ORDER BY 1
"""
_COLUMNS = """
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


class PostgresEngine:
    """Runs SQL on the owner's PostgreSQL database through a fixed pool of locked-down connections."""

    dialect = "postgres"

    def __init__(self, dsn: str, limits: EngineLimits = EngineLimits(), *, served: Iterable[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``served`` are the tables ("schema.table") the sandbox serves: the role may read these and no
        other. ``clock`` (seconds, monotonic) decides whether a query finished within its time limit."""
        self.limits = limits
        self.served = set(served)
        self.clock = clock
        try:  # the first connection alone, so that a refusal says what is wrong instead of a pool timeout
            with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as first:
                lock_down(first, limits, self.served)
                self.name = first.info.dbname
                self._data_version = _data_version(first, self.served)
        except psycopg.Error as error:
            log.error("cannot connect to the PostgreSQL engine (%s): %s", type(error).__name__, error)
            raise DsbrokerError("the sandbox cannot connect to its PostgreSQL server; the sandbox's log has why",
                                reason="ENGINE_UNREACHABLE") from None
        self._pool = ConnectionPool(
            dsn, min_size=limits.pool_size, max_size=limits.pool_size, open=False, name="dsbroker-engine",
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=lambda connection: lock_down(connection, limits, self.served))
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 3)
        except PoolTimeout:
            self._pool.close()
            raise DsbrokerError("the engine's connections could not all be opened locked down; refusing to serve",
                                reason="ENGINE_NOT_LOCKED_DOWN") from None
        self._watchdog = Watchdog()
        self._closed = False
        # A numeric the server types no further (a SUM, an EXTRACT) is an integer when every numeric column
        # served holds integers, as DuckDB's HUGEINT and BIGINT; otherwise it stays a decimal (see _reader).
        self._integral_numeric = all(_integral(kind) for table in self.tables() for _name, kind in self.columns(table)
                                     if kind.startswith("numeric"))

    def data_version(self) -> str:
        """The database and the rows written to each served table, as the server counted them at start."""
        return self._data_version

    def data_stamp(self) -> None:
        """None: the owner's database can change at any moment (other sessions write to it), so nothing read is
        kept."""
        return None

    def tables(self) -> set[str]:
        """The served tables the role can read, as "schema.table"."""
        with self._pool.connection() as connection:
            readable = {row[0] for row in connection.execute(_TABLES)}
        return readable & self.served

    def columns(self, table: str) -> list[tuple[str, str]]:
        """The (name, PostgreSQL type) of each column of ``table`` ("schema.table"), in table order."""
        schema, name = table.split(".", 1)
        with self._pool.connection() as connection:
            return [(row[0], row[1]) for row in connection.execute(_COLUMNS, [schema, name])]

    def missing_statistics(self, wanted: dict[str, tuple[str, list[str]]]) -> dict[str, str]:
        """Per served table of ``wanted`` (table -> entity and group columns) without the ndistinct statistics the
        guarded plans need, the statement its owner runs (:mod:`sandbox.engine.postgres_statistics`)."""
        try:
            with self._pool.connection() as connection:
                return missing_statistics(connection, {t: w for t, w in wanted.items() if t in self.served})
        except psycopg.Error as error:  # advice only: a server that cannot say does not stop the sandbox
            log.warning("cannot read the served tables' planner statistics (%s): %s", type(error).__name__, error)
            return {}

    def execute(self, sql: str, *, timeout_s: float, max_rows: int) -> EngineResult:
        """Run ``sql`` under a statement timeout of ``timeout_s``; return at most ``max_rows`` rows.

        Engine messages are logged here and never returned: they can quote data.
        """
        try:
            connection = self._pool.getconn(timeout=max(timeout_s, 0.001))
        except PoolTimeout:
            raise DsbrokerError("the sandbox is busy; try again", reason="SANDBOX_BUSY") from None
        started = time.perf_counter()
        deadline = self.clock() + timeout_s
        timeout_ms = max(1, min(int(timeout_s * 1000), self.limits.max_execution_ms))
        cancel = _Cancel(connection)
        token = self._watchdog.arm(timeout_s + CANCEL_GRACE_S, cancel)
        try:
            with connection.transaction():  # read-only by default_transaction_read_only, checked by the lockdown
                connection.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                cursor = connection.cursor()
                rows = list(cursor.stream(f"SELECT * FROM ({sql}) AS __capped LIMIT {int(max_rows) + 1}",
                                          size=STREAM_ROWS))
                description = cursor.description or []
        except pg_errors.QueryCanceled:  # the statement timeout, or the watchdog's cancel
            raise _timeout() from None
        except psycopg.Error as error:
            log.warning("engine error (%s): %s", type(error).__name__, error)
            raise ExecutionError("the engine could not run the query", error_class=type(error).__name__) from None
        finally:
            self._watchdog.disarm(token)
            cancel.finish()
            self._release(connection, cancel.sent)
        if self.clock() > deadline:  # finished, but after its time: the caller's deadline has passed
            raise _timeout()
        readers = [_reader(column, self._integral_numeric) for column in description]
        names = [column.name for column in description]
        types = [kind for kind, _read in readers]
        try:
            converted = [tuple(read(value) for (_kind, read), value in zip(readers, row, strict=True))
                         for row in rows[:max_rows]]
        except ArithmeticError:
            raise ExecutionError("the engine could not run the query", error_class="NumericNotIntegral") from None
        micros = int((time.perf_counter() - started) * 1e6)
        return EngineResult(names, types, converted, len(rows) > max_rows, micros)

    def _release(self, connection: psycopg.Connection, cancelled: bool) -> None:
        """Give ``connection`` back to the pool; after a cancel, only once a stray cancel cannot reach the next
        query (one that arrives while the server waits for a statement is dropped, one during it fails it)."""
        if cancelled:
            for _attempt in range(3):
                try:
                    connection.execute("SELECT 1")
                    break
                except pg_errors.QueryCanceled:
                    continue
                except psycopg.Error:
                    connection.close()  # the pool opens a new one, which passes the lockdown first
                    break
            else:
                connection.close()
        self._pool.putconn(connection)

    def close(self) -> None:
        """Close every connection."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        self._pool.close()


class _Cancel:
    """The watchdog's cancel of one query: sent only while the query is still running, and finished before
    the connection goes back to the pool (``finish`` waits for a cancel under way)."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._done = False
        self.sent = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self.sent = True
            try:
                self._connection.cancel_safe(timeout=CANCEL_TIMEOUT_S)
            except psycopg.Error as error:
                log.error("could not cancel a late query (%s): %s", type(error).__name__, error)

    def finish(self) -> None:
        with self._lock:
            self._done = True


def _data_version(connection: psycopg.Connection, served: set[str]) -> str:
    """The database's oid and the server's write counts of the ``served`` tables that exist, as one digest."""
    database = connection.execute(
        "SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()").fetchone()
    existing = [table for table in sorted(served) if connection.execute(
        "SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone() == (True,)]
    writes = connection.execute(_WRITES, [existing]).fetchall() if existing else []
    digest = hashlib.sha256(repr((database, writes)).encode()).hexdigest()[:32]
    return f"postgres:{connection.info.dbname}:{digest}"


def _reader(column: Any, integral_numeric: bool) -> tuple[str, Callable[[Any], Any]]:
    """The DuckDB type name of a result column, and how to read its values as DuckDB gives them."""
    if column.type_code != _NUMERIC:
        info = pg_types.get(column.type_code)
        name = info.name if info is not None else str(column.type_code)
        return _DUCKDB_TYPES.get(name, name.upper()), _same
    if column.scale is not None:  # numeric(p, s): its scale says whether it holds integers
        if column.scale == 0:
            return "HUGEINT", _integer
        return f"DECIMAL({column.precision},{column.scale})", _same
    return ("HUGEINT", _integer) if integral_numeric else ("DECIMAL", _same)


def _same(value: Any) -> Any:
    return value


def _integer(value: decimal.Decimal | None) -> int | None:
    """An integral numeric as an int; a fraction cannot come from guarded SQL on integer columns."""
    if value is None:
        return None
    if value != value.to_integral_value():
        raise ArithmeticError("a fraction where an integer was expected")
    return int(value)


def _integral(kind: str) -> bool:
    """Whether a column of PostgreSQL type ``kind`` (a numeric) holds only integers: ``numeric(p)`` or
    ``numeric(p,0)``; a bare ``numeric`` may hold fractions."""
    return kind.startswith("numeric(") and (kind.endswith(",0)") or "," not in kind)


def _timeout() -> DsbrokerError:
    return DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
