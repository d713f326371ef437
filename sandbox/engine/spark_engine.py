"""The Spark SQL engine: the owner's tables as Parquet files (or directories of them), read by a Spark session
locked down by :mod:`sandbox.engine.spark_lockdown`.

The session is the sandbox's own on ``spark.master``: ``local[N]`` on the sandbox's machine, or a cluster's
master (``spark://host:7077``, ``yarn``, ``k8s://...``), where the same plan runs unchanged on the executors;
or a session on a Spark Connect server (``remote``, ``sc://host:port``), whose settings the engine verifies
instead of setting (:mod:`sandbox.engine.spark_sessions`). The engine registers exactly the served tables in
the session's in-memory catalog, from Python (never from SQL text), and checks the lockdown before it serves.

Each query runs in a job group of its own (on Spark Connect: under an operation tag of its own), so the
watchdog cancels it at its deadline (``cancelJobGroup`` with interrupt, or ``interruptTag``); the cancel is
repeated until the query has stopped, because a job the query starts after the first cancel (Spark plans
first, then submits jobs) would otherwise run on. The session serves the next query afterwards. At most
``pool_size`` queries run at once.

Rows come back as DuckDB gives them, because disclosure control and the wire read DuckDB's type names and
Python types: Spark's sums of integers are DECIMAL(p, 0) (see the guard's ``translate_sums``), given as
``int`` and named HUGEINT, as PostgreSQL's numeric sums are.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from dsbroker.errors import DsbrokerError, ExecutionError
from sandbox.engine.interface import EngineLimits, EngineResult
from sandbox.engine.spark_lockdown import NotAQuery, connect_problems, denied_in_plan, session_problems
from sandbox.engine.spark_sessions import ConnectSession, OwnSession
from sandbox.engine.watchdog import Watchdog

log = logging.getLogger(__name__)

CANCEL_REPEAT_S = 0.2  # how often a late query's job group is cancelled again, until it has stopped
_PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
# Spark's type names (simpleString) as DuckDB names them; decimals are decided apart.
_DUCKDB_TYPES = {"boolean": "BOOLEAN", "tinyint": "TINYINT", "smallint": "SMALLINT", "int": "INTEGER",
                 "bigint": "BIGINT", "float": "FLOAT", "double": "DOUBLE", "string": "VARCHAR", "date": "DATE",
                 "timestamp": "TIMESTAMP", "timestamp_ntz": "TIMESTAMP"}
_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")


class SparkEngine:
    """Runs SQL on the served Parquet tables through one locked-down Spark session."""

    dialect = "spark"

    def __init__(self, tables: Mapping[str, str], limits: EngineLimits = EngineLimits(), *, master: str = "local[2]",
                 remote: str = "", session: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``tables`` maps each served table ("schema.table") to its Parquet file or directory. With ``remote``
        (a Spark Connect URL) the session is one of the engine's own on that server (or ``session``, one the
        caller opened there); otherwise the process's Spark session when one runs (it must have been started
        locked down, which is checked), else one started here on ``master``. A session the engine opened is
        stopped by :meth:`close`."""
        if not tables:
            raise DsbrokerError("no tables to serve", reason="ENGINE_NOT_LOCKED_DOWN")
        bad = sorted(name for name in tables if not _NAME.match(name))
        if bad:
            raise DsbrokerError(f"served table names must be schema.table: {', '.join(bad)}",
                                reason="ENGINE_NOT_LOCKED_DOWN")
        # A file system path on the sandbox's own session must exist here; a URI (hdfs://, s3a://, file:) and any
        # path on Spark Connect (the server's) is checked by Spark as the table is registered.
        seen_here = {name: path for name, path in tables.items() if not remote and "://" not in path}
        missing = sorted(name for name, path in seen_here.items() if not Path(path).exists())
        if missing:
            raise DsbrokerError(f"the Parquet data of {', '.join(missing)} does not exist", reason="DATA_FILE_MISSING")
        self.limits = limits
        self.clock = clock
        self.served = set(tables)
        self.paths = {name: str(Path(path).resolve()) if name in seen_here else path for name, path in tables.items()}
        self.name = "spark"
        self._side = ConnectSession(remote, session, address=_address(remote)) if remote \
            else OwnSession(master, limits)
        self.session = self._side.session
        for name in _PYSPARK_ERROR_LOGGERS:
            logging.getLogger(name).disabled = True
        self._slots = threading.BoundedSemaphore(max(1, limits.pool_size))
        self._groups = itertools.count()
        self._watchdog = Watchdog()
        self._closed = False
        try:
            self._register()
            wrong = (connect_problems(self.session) if remote else []) + session_problems(
                self.session, limits, self.paths, self.probe)
        except BaseException:
            self.close()
            raise
        if wrong:
            self.close()
            raise DsbrokerError(f"the Spark session is not locked down ({'; '.join(wrong)}); refusing to serve",
                                reason="ENGINE_NOT_LOCKED_DOWN")
        # The files' sizes and times where the sandbox sees them all itself, else the files Spark lists.
        here = all("://" not in path and Path(path).exists() for path in self.paths.values())
        self._data_version = _data_version(self.paths) if here else _files_version(self.session, self.paths)

    def _register(self) -> None:
        """Each served table as an external table of its schema in the in-memory catalog (a table of the same
        name already there, from an engine before this one in the process, is replaced)."""
        catalog = self.session.catalog
        for name, path in sorted(self.paths.items()):
            schema, table = name.split(".")
            if not catalog.databaseExists(schema):
                self.session.sql(f"CREATE DATABASE `{schema}`")  # the name is checked: letters, digits, _
            if catalog.tableExists(name):
                self.session.sql(f"DROP TABLE `{schema}`.`{table}`")  # external: the files stay
            try:
                catalog.createTable(name, path=path, source="parquet")
            except Exception as error:  # Spark's message names the path, never data
                log.warning("could not register %s (%s): %s", name, type(error).__name__,
                            str(error).splitlines()[0][:300])
                raise DsbrokerError(f"the Parquet data of {name} could not be read", reason="DATA_FILE_MISSING") \
                    from None

    def data_version(self) -> str:
        """The served files' sizes and modification times when the engine opened them, as one digest."""
        return self._data_version

    def data_stamp(self) -> None:
        """None: Parquet files can be rewritten at any moment, on any machine of a cluster: nothing read is kept."""
        return None

    def tables(self) -> set[str]:
        """The served tables, as "schema.table"."""
        return set(self.served)

    def columns(self, table: str) -> list[tuple[str, str]]:
        """The (name, Spark type) of each column of ``table`` ("schema.table"), in table order."""
        if table not in self.served:
            return []
        return [(column.name, column.dataType) for column in self.session.catalog.listColumns(table)]

    def execute(self, sql: str, *, timeout_s: float, max_rows: int) -> EngineResult:
        """Run ``sql`` in a job group of its own, cancelled after ``timeout_s``; at most ``max_rows`` rows.

        Engine messages are logged here and never returned: they can quote data.
        """
        if not self._slots.acquire(timeout=max(timeout_s, 0.001)):
            raise DsbrokerError("the sandbox is busy; try again", reason="SANDBOX_BUSY")
        try:
            return self._run(sql, timeout_s=timeout_s, max_rows=max_rows)
        finally:
            self._slots.release()

    def _run(self, sql: str, *, timeout_s: float, max_rows: int) -> EngineResult:
        started = time.perf_counter()
        deadline = self.clock() + timeout_s
        try:
            text = self._side.statement(sql)
        except NotAQuery:
            log.warning("engine refused a text that is not one query")
            raise ExecutionError("the engine could not run the query", error_class="NotAQuery") from None
        group = f"dsbroker-{os.getpid()}-{next(self._groups)}"
        cancel = _Cancel(self._side.begin(group))
        token = self._watchdog.arm(timeout_s, cancel.start)
        try:
            frame = self.session.sql(text)
            denied = denied_in_plan(self._side.plan(frame))
            if denied is not None:
                raise _Denied(denied)
            schema = frame.schema
            rows = [tuple(row) for row in frame.take(max_rows + 1)]
        except _Denied as refused:
            log.warning("engine refused a plan that reads %s", refused.args[0])
            raise ExecutionError("the engine could not run the query", error_class="DeniedInPlan") from None
        except Exception as error:  # py4j's and pyspark's errors both; the message can quote data
            if cancel.started:
                raise _timeout() from None
            log.warning("engine error (%s): %s", type(error).__name__, str(error).splitlines()[0][:500])
            raise ExecutionError("the engine could not run the query", error_class=type(error).__name__) from None
        finally:
            self._watchdog.disarm(token)
            cancel.finish()
            self._side.end(group)
        if cancel.started or self.clock() > deadline:  # finished, but after its time
            raise _timeout()
        readers = [_reader(field.dataType.simpleString()) for field in schema.fields]
        converted = [tuple(read(value) for (_kind, read), value in zip(readers, row, strict=True))
                     for row in rows[:max_rows]]
        micros = int((time.perf_counter() - started) * 1e6)
        return EngineResult([field.name for field in schema.fields], [kind for kind, _read in readers], converted,
                            len(rows) > max_rows, micros)

    def probe(self, sql: str) -> None:
        """Run one lockdown probe as a query is run; DsbrokerError when it is refused."""
        self._run(sql, timeout_s=self.limits.max_execution_ms / 1000, max_rows=1)

    def close(self) -> None:
        """Stop the watchdog, and the session when this engine started it."""
        if self._closed:
            return
        self._closed = True
        self._watchdog.close()
        if self._side.owned:
            self.session.stop()


class _Denied(Exception):
    """A query's plan calls a function or reads a column the lockdown denies (named in args[0])."""


class _Cancel:
    """The watchdog's cancel of one query (its job group's, or its tag's), repeated until the query has stopped."""

    def __init__(self, cancel: Callable[[], Any]) -> None:
        self._cancel = cancel
        self._done = threading.Event()
        self.started = False

    def start(self) -> None:
        if self._done.is_set():
            return
        self.started = True
        threading.Thread(target=self._repeat, name="spark-cancel", daemon=True).start()

    def _repeat(self) -> None:
        while not self._done.is_set():
            try:
                self._cancel()
            except Exception as error:
                log.error("could not cancel a late query (%s)", type(error).__name__)
            self._done.wait(CANCEL_REPEAT_S)

    def finish(self) -> None:
        self._done.set()


def _reader(spark_type: str) -> tuple[str, Callable[[Any], Any]]:
    """The DuckDB type name of a result column of ``spark_type``, and how to read its values as DuckDB gives
    them."""
    decimal = _DECIMAL.match(spark_type)
    if decimal:
        precision, scale = decimal.groups()
        if scale == "0":
            return "HUGEINT", _integer
        return f"DECIMAL({precision},{scale})", _same
    return _DUCKDB_TYPES.get(spark_type, spark_type.upper()), _same


def _same(value: Any) -> Any:
    return value


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _data_version(paths: Mapping[str, str]) -> str:
    """Per served table, the size and modification time of each of its files, as one digest."""
    entries = []
    for name, path in sorted(paths.items()):
        root = Path(path)
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        entries.append((name, [(str(f.relative_to(root)) if root.is_dir() else f.name, f.stat().st_size,
                                f.stat().st_mtime_ns) for f in files if f.is_file()]))
    return "spark:" + hashlib.sha256(repr(entries).encode()).hexdigest()[:32]


def _files_version(session: Any, paths: Mapping[str, str]) -> str:
    """Per served table, the files Spark reads for it (paths the sandbox cannot see itself: a Spark Connect
    server's), as one digest; a rewrite of a table names new files (Spark's writers name each one anew)."""
    entries = [(name, sorted(session.table(name).inputFiles())) for name in sorted(paths)]
    return "spark:" + hashlib.sha256(repr(entries).encode()).hexdigest()[:32]


def _address(remote: str) -> str:
    """host:port of a Spark Connect URL (sc://host:port/;params), without its parameters (a token among them)."""
    return remote.removeprefix("sc://").split("/")[0].split(";")[0]


def _timeout() -> DsbrokerError:
    return DsbrokerError("the query ran past its deadline and was stopped", reason="QUERY_TIMEOUT")
