"""The engine ``sandbox serve`` settings name, opened locked down, and where the sandbox's own state lives.

``engine = "duckdb"`` opens the data file ``data``; ``engine = "postgres"`` connects to ``postgres_dsn`` as the
role the owner made for the sandbox and verifies its lockdown (:mod:`sandbox.engine.postgres_lockdown`)
before anything is served; ``engine = "spark"`` registers ``spark_tables`` (Parquet) in a Spark session on
``spark_master`` (or in a session on the Spark Connect server ``spark_remote``) and verifies its lockdown
(:mod:`sandbox.engine.spark_lockdown`). The DSN may hold a password, so it is never logged or echoed: what is
logged is :func:`described`, which leaves the password out; of ``spark_remote`` (which may hold a token) only
the host and port are logged.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Callable, Iterator

from dsbroker.errors import ConfigError
from sandbox.engine.interface import Engine, EngineLimits
from sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "postgres", "spark")
# The libpq parameters that say where and as whom the sandbox connects (never the password).
_SHOWN_PARAMETERS = ("host", "hostaddr", "port", "dbname", "user", "sslmode")
DEFAULT_SPARK_MASTER = "local[2]"
# sc://host:port, then optionally /;key=value;... (Spark Connect's parameters, a token among them).
_CONNECT_URL = re.compile(r"^sc://([A-Za-z0-9.\-]+:[0-9]{1,5})/?(;[^;=]+=[^;]*)*$")


def open_engine(settings: SandboxSettings, *, clock: Callable[[], float] = time.monotonic,
                pool_size: int | None = None) -> Engine:
    """The engine ``settings`` name, connected, locked down and checked; ConfigError when the settings do not
    name one, DsbrokerError (``ENGINE_NOT_LOCKED_DOWN``, ``ENGINE_UNREACHABLE``) when it cannot serve."""
    limits = EngineLimits(memory_limit=settings.memory_limit, threads=settings.threads,
                          pool_size=pool_size or settings.pool_size,
                          max_execution_ms=max(1, int(settings.max_execution_seconds * 1000)))
    if settings.engine == "duckdb":
        return _duckdb(settings, limits, clock)
    if settings.engine == "postgres":
        return _postgres(settings, limits, clock)
    if settings.engine == "spark":
        return _spark(settings, limits, clock)
    raise ConfigError(f"engine must be one of {', '.join(ENGINES)}")


@contextlib.contextmanager
def serving_engine(settings: SandboxSettings, config: str) -> Iterator[Engine]:
    """The engine ``settings`` name, opened for one command (one connection), refused unless it serves every
    configured dataset; closed after."""
    engine = open_engine(settings, pool_size=1)
    try:
        missing = sorted(set(settings.datasets) - engine.tables())
        if missing:
            raise ConfigError(f"{config}: datasets not served by its {settings.engine} engine "
                              f"({engine.name}): {', '.join(missing)}")
        yield engine
    finally:
        engine.close()


def _duckdb(settings: SandboxSettings, limits: EngineLimits, clock: Callable[[], float]) -> Engine:
    from sandbox.engine.duckdb_engine import DuckDBEngine

    if not settings.data:
        raise ConfigError("no data file configured; pass --data PATH or set data in the config file "
                          "(or engine = \"postgres\" with postgres_dsn)")
    if settings.postgres_dsn:
        raise ConfigError("postgres_dsn is set but engine is \"duckdb\"; set engine = \"postgres\" to serve it")
    engine = DuckDBEngine(settings.data, limits, clock=clock)
    if any(table.split(".")[0] == engine.path.stem for table in engine.tables()):
        engine.close()
        raise ConfigError(f"the data file's name {engine.path.name!r} equals schema {engine.path.stem!r}, which makes "
                          "DuckDB names ambiguous; rename the file (e.g. to owner-data.duckdb)")
    return engine


def _postgres(settings: SandboxSettings, limits: EngineLimits, clock: Callable[[], float]) -> Engine:
    from sandbox.engine.postgres_engine import PostgresEngine

    if not settings.postgres_dsn:
        raise ConfigError("engine = \"postgres\" needs postgres_dsn, the connection string of the sandbox's "
                          "read-only role (e.g. \"host=db.internal dbname=tax user=dsbroker_sandbox\")")
    if settings.data:
        raise ConfigError("data names a DuckDB file, but engine is \"postgres\"; leave data empty")
    if not settings.datasets:
        raise ConfigError("no datasets configured: the PostgreSQL role may read the datasets and no other table")
    log.info("connecting to PostgreSQL (%s)", described(settings.postgres_dsn))
    return PostgresEngine(settings.postgres_dsn, limits, served=settings.datasets, clock=clock)


def _spark(settings: SandboxSettings, limits: EngineLimits, clock: Callable[[], float]) -> Engine:
    from sandbox.engine.spark_engine import SparkEngine

    if settings.data or settings.postgres_dsn:
        raise ConfigError("data or postgres_dsn is set, but engine is \"spark\"; leave them empty and list the "
                          "tables in spark_tables")
    tables = spark_tables(settings)
    if settings.spark_remote:
        if settings.spark_master:
            raise ConfigError("spark_master and spark_remote are both set: the sandbox runs either a Spark session "
                              "of its own on spark_master or on the Spark Connect server spark_remote; leave one "
                              "empty")
        remote = connect_address(settings.spark_remote)
        log.info("connecting to Spark Connect at %s for %s", remote, ", ".join(sorted(tables)))
        return SparkEngine(tables, limits, remote=settings.spark_remote, clock=clock)
    master = settings.spark_master or DEFAULT_SPARK_MASTER
    log.info("starting Spark on %s for %s", master, ", ".join(sorted(tables)))
    return SparkEngine(tables, limits, master=master, clock=clock)


def connect_address(remote: str) -> str:
    """The host and port of the Spark Connect URL ``remote`` (sc://host:port/;params), for logs: its parameters
    (a token among them) are left out; ConfigError when it is not such a URL."""
    match = _CONNECT_URL.match(remote)
    if not match:
        raise ConfigError("spark_remote must be a Spark Connect URL, sc://host:port (with /;use_ssl=true;token=... "
                          "for a server behind TLS with a token)")
    return match.group(1)


def spark_tables(settings: SandboxSettings) -> dict[str, str]:
    """``spark_tables`` as table -> path: exactly the datasets, each once (a table listed that is not served would
    be registered for no one; a dataset without a path could not be read)."""
    tables: dict[str, str] = {}
    for entry in settings.spark_tables:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise ConfigError("spark_tables must be a table of schema.table = path (e.g. [spark_tables] "
                              "\"tax.declarations\" = \"/data/tax/declarations\")")
        tables[entry[0]] = entry[1]
    if not settings.datasets:
        raise ConfigError("no datasets configured: the Spark session registers the datasets and no other table")
    unserved = sorted(set(tables) - set(settings.datasets))
    if unserved:
        raise ConfigError(f"spark_tables lists tables that are not datasets: {', '.join(unserved)}")
    unplaced = sorted(set(settings.datasets) - set(tables))
    if unplaced:
        raise ConfigError(f"spark_tables gives no Parquet path for {', '.join(unplaced)}")
    return tables


def described(dsn: str) -> str:
    """Where and as whom ``dsn`` connects, without its password or anything else (for logs)."""
    from psycopg import conninfo

    try:
        parameters = conninfo.conninfo_to_dict(dsn)
    except Exception:  # psycopg's parse error can quote the string, password included
        raise ConfigError("postgres_dsn is neither a libpq connection string nor a postgresql:// URI") from None
    return " ".join(f"{name}={parameters[name]}" for name in _SHOWN_PARAMETERS if parameters.get(name)) or "defaults"


def state_path(settings: SandboxSettings, configured: str, name: str) -> Path:
    """Where one of the sandbox's ledgers lives: ``configured`` when set, else ``<state_dir>/<name>``, else beside
    the DuckDB data file (``<data>.<name>``). PostgreSQL and Spark have no file to keep it beside: ConfigError."""
    if configured:
        return Path(configured)
    if settings.state_dir:
        return Path(settings.state_dir) / name
    if settings.engine == "duckdb" and settings.data:
        data = Path(settings.data)
        return data.with_name(f"{data.name}.{name}")
    if settings.engine == "duckdb":
        raise ConfigError("no data file configured; pass --data PATH or set data in the config file")
    raise ConfigError(f"set state_dir (a directory the sandbox keeps its ledgers in, e.g. {name} there): with "
                      f"engine = \"{settings.engine}\" there is no data file to keep them beside")
