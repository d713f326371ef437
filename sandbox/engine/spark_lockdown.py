"""The Spark lockdown: the session's settings, the functions taken out of it, the statement check every query
passes, and the probes that verify it all before the engine serves.

- Settings fixed when the session starts: ``spark.sql.runSQLOnFiles=false`` (no ``parquet.`/path```), the
  in-memory catalog (Hive support off: no metastore, no SerDes), ANSI mode (an overflow fails instead of
  wrapping round to a wrong answer), the UI off, and the driver's and executors' memory capped at
  ``memory_limit``.
- Functions that reach the JVM or the files are dropped from the session's function registry: ``reflect``,
  ``java_method`` and ``try_reflect`` (call any Java static method), ``input_file_name`` and the
  ``input_file_block_*`` pair (name the files behind the served tables). The guard never writes them; this
  is the second layer. Spark has no setting that denies a function, so they are removed from this session
  (a ``newSession()`` would have them again; the engine uses only its own).
- Each query is parsed by Spark's own parser as a query (``parseQuery``) before it runs: ``SET``, ``ADD
  JAR``/``FILE``, ``CREATE [TEMPORARY] FUNCTION``, ``INSERT``, ``CREATE TABLE``, ``CACHE TABLE``, ``DROP``
  and a second statement are not queries, and are refused before Spark sees them as statements (Spark
  itself would run each of them: a ``SET`` from a query changes the session).
- The catalog holds the served tables and nothing else: the engine registers them from Python, and checks
  at start that no other table, view, temporary or global temporary view is there.
- Each query's analyzed plan is read before it runs, and refused when it calls a dropped function or reads a
  file table's hidden ``_metadata`` column (whose ``file_path`` names the files, as ``input_file_name`` does).

On a Spark Connect server (``spark_remote``) the settings are the server operator's and the client reaches
neither the parser nor the function registry, so the engine verifies instead of setting
(:func:`session_problems` and :func:`connect_problems`): the same settings, memory as read from the server
(Spark's 1g where it sets none), no ``spark.sql.catalog.*`` or ``spark.sql.extensions`` setting, no catalog but
``spark_catalog``, no user function; each text runs as the one subquery of ``SELECT * FROM (...)``, so the
server's parser reads it as one query or refuses it; and the dropped functions, which the server still has,
are refused by the plan check, on the plan the server makes (``explain``, nothing runs).

What the lockdown does not do: it cannot stop a function Spark adds in a later version from reaching files
(the guard's function whitelist is the defence there, and the sandbox re-checks every plan with the guard);
the data files must be readable by the sandbox's account and writable by no process Spark runs (the engine
never writes, but the owner's file permissions are what makes that sure).
"""

from __future__ import annotations

import re
from typing import Any

from dsbroker.errors import DsbrokerError
from sandbox.engine.interface import EngineLimits

# Functions that call into the JVM or name the files behind a table.
DROPPED_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect", "input_file_name",
                               "input_file_block_start", "input_file_block_length"})
# Each must be refused; the probes show the lockdown holds on the session that will serve. The first reads a
# served table's own Parquet by its path, which Spark reads whenever SQL on files is on.
PROBES = {
    "SQL on files allowed": "SELECT COUNT(*) FROM parquet.`{path}`",
    "reflect allowed": "SELECT reflect('java.lang.System', 'getProperty', 'user.home')",
    "java_method allowed": "SELECT java_method('java.lang.System', 'getProperty', 'user.home')",
    "input_file_name allowed": "SELECT input_file_name()",
    "_metadata allowed": "SELECT _metadata.file_path FROM {table}",
    "SET allowed": "SET spark.sql.runSQLOnFiles = true",
    "ADD JAR allowed": "ADD JAR /nonexistent/dsbroker-probe.jar",
    "CREATE FUNCTION allowed": "CREATE TEMPORARY FUNCTION dsbroker_probe AS 'java.lang.String'",
    "CREATE TABLE allowed": "CREATE TABLE dsbroker_probe AS SELECT 1 AS x",
    "CACHE TABLE allowed": "CACHE TABLE dsbroker_probe AS SELECT 1 AS x",
}
# In a query's plan: a dropped function called (on Spark Connect, where the server still has them), or the
# hidden ``_metadata`` column of a file table, whose file_path names the files behind it as input_file_name does.
_DENIED_IN_PLAN = re.compile(r"(?<![A-Za-z0-9_])(?:(" + "|".join(sorted(DROPPED_FUNCTIONS)) + r")\s*\(|(_metadata)"
                             r"(?![A-Za-z0-9_]))", re.IGNORECASE)
# Settings a Spark Connect server's operator could use to widen what a session reaches: other catalogs (a
# JDBC, Hive or lakehouse catalog beside the session's own), and extensions (which can add functions, rules and
# parsers the lockdown does not know).
_WIDENING_PREFIXES = ("spark.sql.catalog.", "spark.sql.extensions")
_MEMORY = re.compile(r"^\s*(\d+)\s*(KB|MB|GB|TB|KIB|MIB|GIB|TIB|K|M|G|T)?\s*$", re.IGNORECASE)


class NotAQuery(Exception):
    """Raised by :func:`check_query` when the text is not one query (a statement, or several)."""


def session_settings(limits: EngineLimits, master: str) -> dict[str, str]:
    """The settings the engine's session starts with (the static ones cannot change afterwards)."""
    memory = spark_memory(limits.memory_limit)
    settings = {
        "spark.sql.runSQLOnFiles": "false",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.ansi.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": memory,
        "spark.executor.memory": memory,
        "spark.sql.execution.arrow.pyspark.enabled": "false",
    }
    if master.startswith("local"):  # one machine: as many partitions after a shuffle as threads to run them
        settings["spark.sql.shuffle.partitions"] = str(max(1, int(limits.threads)))
    return settings


def spark_memory(memory_limit: str) -> str:
    """``memory_limit`` ("2GB", "512MB") as Spark writes memory ("2g", "512m"); ConfigError-like
    DsbrokerError for anything else."""
    match = _MEMORY.match(memory_limit)
    if not match:
        raise DsbrokerError(f"memory_limit {memory_limit!r} is not an amount of memory (e.g. 2GB)",
                            reason="ENGINE_NOT_LOCKED_DOWN")
    unit = (match.group(2) or "b").lower()[0]
    return f"{int(match.group(1))}{unit if unit != 'b' else ''}"


def drop_functions(session: Any) -> None:
    """Remove :data:`DROPPED_FUNCTIONS` from ``session``'s own function registry."""
    registry = session._jsparkSession.sessionState().functionRegistry()
    identifiers = registry.listFunction().iterator()
    found = []
    while identifiers.hasNext():
        identifier = identifiers.next()
        if identifier.funcName().lower() in DROPPED_FUNCTIONS:
            found.append(identifier)
    for identifier in found:
        registry.dropFunction(identifier)


def check_query(session: Any, sql: str) -> None:
    """Parse ``sql`` with Spark's own parser as one query; NotAQuery when it is anything else."""
    try:
        session._jsparkSession.sessionState().sqlParser().parseQuery(sql)
    except Exception:  # Spark's parse error quotes the text: the caller logs none of it
        raise NotAQuery() from None


def session_problems(session: Any, limits: EngineLimits, paths: dict[str, str], run: Any) -> list[str]:
    """What does not hold on ``session``, each named; empty when it is locked down. ``paths`` are the served
    tables' Parquet; ``run`` runs one SQL text through the engine's own path (the statement check included) and
    raises DsbrokerError when it is refused."""
    served = set(paths)
    sample = sorted(paths.values())[0].replace("`", "``")
    wrong = []
    expected = {"spark.sql.runSQLOnFiles": "false", "spark.sql.catalogImplementation": "in-memory",
                "spark.sql.ansi.enabled": "true"}
    for name, value in expected.items():
        if str(session.conf.get(name, "")).lower() != value:
            wrong.append(f"{name} is not {value}")
    memory = spark_memory(limits.memory_limit)
    for name in ("spark.driver.memory", "spark.executor.memory"):
        if _memory_setting(session, name) != memory:
            wrong.append(f"{name} is not {memory}")
    listed = catalog_tables(session)
    if listed != served:
        extra, missing = sorted(listed - served), sorted(served - listed)
        if extra:
            wrong.append(f"the catalog holds tables not served: {', '.join(extra)}")
        if missing:
            wrong.append(f"served tables not registered: {', '.join(missing)}")
    for problem, statement in PROBES.items():
        try:
            run(statement.format(path=sample, table=sorted(served)[0]))
        except DsbrokerError:
            continue
        wrong.append(problem)
    return wrong


def connect_problems(session: Any) -> list[str]:
    """What a Spark Connect server gives its sessions beyond the lockdown, each named (the engine cannot take
    it away from the client, so it refuses to start): settings that add catalogs or extensions, a catalog other
    than the session's own, user functions (temporary or in any database)."""
    wrong = []
    widening = sorted(name for name in session.conf.getAll if name.startswith(_WIDENING_PREFIXES))
    if widening:
        wrong.append(f"the server sets {', '.join(widening)}")
    catalogs = sorted(catalog.name for catalog in session.catalog.listCatalogs())
    if catalogs != ["spark_catalog"]:
        wrong.append(f"the server has catalogs other than spark_catalog: {', '.join(catalogs)}")
    # The session's temporary functions, then each database's (a backtick in a database's name doubled, as
    # Spark quotes it).
    scopes = [""] + [" FROM `" + database.name.replace("`", "``") + "`" for database in session.catalog.listDatabases()]
    functions: set[str] = set()
    for scope in scopes:
        functions.update(row[0] for row in session.sql("SHOW USER FUNCTIONS" + scope).collect())
    if functions:
        wrong.append(f"the session has user functions: {', '.join(sorted(functions))}")
    return wrong


def denied_in_plan(plan: str) -> str | None:
    """The first dropped function or ``_metadata`` column ``plan`` (a query's plan as text) names, else None."""
    found = _DENIED_IN_PLAN.search(plan)
    return None if found is None else (found.group(1) or found.group(2)).lower()


def catalog_tables(session: Any) -> set[str]:
    """Every table and view the session's catalog lists, temporary views and global temporary views included,
    as "schema.table" (a temporary view by its name alone)."""
    tables = set()
    for database in session.catalog.listDatabases():
        for table in session.catalog.listTables(dbName=database.name):
            tables.add(f"{database.name}.{table.name}" if not table.isTemporary else table.name)
    # Another session's global temporary views are reachable as global_temp.name, and listDatabases omits them.
    global_views = session.conf.get("spark.sql.globalTempDatabase", "global_temp")
    for table in session.catalog.listTables(dbName=global_views):
        if table.isTemporary and table.namespace:
            tables.add(f"{global_views}.{table.name}")
    return tables


def _memory_setting(session: Any, name: str) -> str:
    """A memory setting of ``session``'s application as Spark writes it: the sandbox's own session must have it
    set; a Spark Connect server's is read from its sessions' settings, with Spark's default (1g) when unset."""
    if _is_remote(session):
        return str(session.conf.get(name, "1g"))
    return str(session.sparkContext.getConf().get(name, ""))


def _is_remote(session: Any) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")
