"""The demo data in the owner's PostgreSQL: copied from a DuckDB file with COPY, and the sandbox's read-only role.

:func:`load_into_postgres` makes each schema of the served tables, copies every table of those schemas
(``COPY ... FROM STDIN``, never row by row) with DuckDB's column types mapped to PostgreSQL's, and makes the
role the sandbox connects as with exactly the grants its lockdown accepts (:func:`role_statements`): the
right to connect, USAGE on the schemas, SELECT on the served tables and on no other (the demo's
``tax.taxpayers``, which holds company names, is loaded and never granted), and ``temp_file_limit`` on the
role, which only a superuser can set. The connection it is given is the owner's, which may create schemas
and roles; the sandbox never connects with it. It also gives the declarations the planner statistics the sandbox's
plans need (:mod:`sandbox.engine.postgres_statistics`), as the demo catalog's entity and group columns say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import duckdb
import yaml

from dsbroker.errors import ConfigError
from sandbox.engine.postgres_statistics import catalog_grouping, missing_statistics

SANDBOX_ROLE = "dsbroker_sandbox"
TEMP_FILE_LIMIT = "1GB"  # what one session of the role may spill to disk; the lockdown refuses it unbounded
COPY_BATCH_ROWS = 10_000
DEMO_CATALOG = Path(__file__).with_name("catalog.yaml")
# DuckDB's column types of the demo data, as PostgreSQL names them.
POSTGRES_TYPES = {"VARCHAR": "text", "DATE": "date", "BIGINT": "bigint", "INTEGER": "integer",
                  "DOUBLE": "double precision", "BOOLEAN": "boolean", "TIMESTAMP": "timestamp"}
# Names are written into SQL as they are, so they must be plain lower-case identifiers.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def role_statements(role: str, served: Iterable[str], *, database: str) -> list[str]:
    """The SQL the owner runs (as a superuser) to let the sandbox read ``served`` ("schema.table") in
    ``database`` as ``role`` and do nothing else; the role itself is made by ``CREATE ROLE role LOGIN``."""
    tables = sorted(set(served))
    for name in (role, database, *(part for table in tables for part in _split(table))):
        _check_identifier(name)
    schemas = sorted({_split(table)[0] for table in tables})
    return ([f"GRANT CONNECT ON DATABASE {database} TO {role}"]
            + [f"GRANT USAGE ON SCHEMA {schema} TO {role}" for schema in schemas]
            + [f"GRANT SELECT ON {table} TO {role}" for table in tables]
            + [f"ALTER ROLE {role} SET temp_file_limit = '{TEMP_FILE_LIMIT}'"])


def load_into_postgres(source: str, owner: Any, *, served: Iterable[str], role: str = SANDBOX_ROLE,
                       replace: bool = False, progress: Callable[[str], None] = lambda _message: None
                       ) -> dict[str, int]:
    """Copy the schemas of ``served`` from the DuckDB file ``source`` into the database of ``owner`` (an
    autocommit psycopg connection that may create schemas and roles), and make ``role`` with the grants of
    :func:`role_statements`; returns the rows copied per table. A schema that exists already is refused
    unless ``replace`` (then it is dropped with everything in it first)."""
    served = sorted(set(served))
    schemas = sorted({_split(table)[0] for table in served})
    statements = role_statements(role, served, database=owner.info.dbname)  # checks every name first
    existing = [schema for schema in schemas if owner.execute(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone()]
    if existing and not replace:
        raise ConfigError(f"schema {', '.join(existing)} exists in database {owner.info.dbname}; pass --replace to "
                          "drop it with every table in it and load the demo data afresh")
    counts: dict[str, int] = {}
    with duckdb.connect(source, read_only=True) as local:
        for schema in schemas:
            if schema in existing:
                owner.execute(f"DROP SCHEMA {schema} CASCADE")
            counts.update(copy_schema(local, owner, schema, progress=progress))
    if owner.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone() is None:
        owner.execute(f"CREATE ROLE {role} LOGIN")
    for statement in statements:
        owner.execute(statement)
    for statement in give_planner_statistics(source, owner, served=served):
        progress(f"gave the planner the statistics the sandbox's plans need: {statement}")
    return counts


def give_planner_statistics(source: str, owner: Any, *, served: Iterable[str]) -> list[str]:
    """Make the ndistinct statistics the sandbox's plans need on the served tables the demo catalog describes
    (the columns read from the DuckDB file ``source``) where ``owner``'s database lacks them, and analyse those
    tables; returns the statements run."""
    served = sorted(set(served))
    with duckdb.connect(source, read_only=True) as local:
        grouping = _demo_grouping(local, served)
    made = list(missing_statistics(owner, grouping).items())
    for table, statement in made:
        owner.execute(statement)
        owner.execute(f"ANALYZE {table}")
    return [statement for _table, statement in made]


def _demo_grouping(local: duckdb.DuckDBPyConnection, served: list[str]) -> dict[str, tuple[str, list[str]]]:
    """The entity and group columns of each served table the demo catalog describes."""
    from sandbox.catalog import load_catalog

    described = set(yaml.safe_load(DEMO_CATALOG.read_text(encoding="utf-8"))["datasets"])
    catalog = load_catalog(DEMO_CATALOG, set(served) | described, lambda table: _columns(local, *_split(table)))
    return {table: grouping for table, grouping in catalog_grouping(catalog).items() if table in served}


def copy_schema(local: duckdb.DuckDBPyConnection, server: Any, schema: str = "tax", *,
                progress: Callable[[str], None] = lambda _message: None) -> dict[str, int]:
    """Copy every table of ``schema`` in the DuckDB connection ``local`` into the same schema, made here, on the
    PostgreSQL connection ``server``, column types mapped; returns the rows copied per table ("schema.table")."""
    _check_identifier(schema)
    server.execute(f"CREATE SCHEMA {schema}")
    tables = [row[0] for row in local.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY 1", [schema]).fetchall()]
    counts = {}
    for table in tables:
        _check_identifier(table)
        columns = _columns(local, schema, table)
        for name, _kind in columns:
            _check_identifier(name)
        server.execute(f"CREATE TABLE {schema}.{table} ("
                       + ", ".join(f"{name} {POSTGRES_TYPES[kind]}" for name, kind in columns) + ")")
        names = ", ".join(name for name, _kind in columns)
        rows = 0
        cursor = local.execute(f"SELECT {names} FROM {schema}.{table}")
        with server.cursor().copy(f"COPY {schema}.{table} ({names}) FROM STDIN") as copy:
            while batch := cursor.fetchmany(COPY_BATCH_ROWS):
                for row in batch:
                    copy.write_row(row)
                rows += len(batch)
        server.execute(f"ANALYZE {schema}.{table}")  # the planner's statistics, as a loaded table would have
        counts[f"{schema}.{table}"] = rows
        progress(f"copied {rows:,} rows into {schema}.{table}")
    return counts


def _columns(local: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple[str, str]]:
    """The (name, DuckDB type) of each column of ``schema.table`` in ``local``, in table order."""
    return [(row[0], row[1]) for row in local.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
        "ORDER BY column_index", [schema, table]).fetchall()]


def _split(table: str) -> tuple[str, str]:
    schema, _dot, name = table.partition(".")
    if not schema or not name:
        raise ConfigError(f"{table!r} is not schema.table")
    return schema, name


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{name!r} is not a plain lower-case PostgreSQL name (letters, digits, underscores)")
