"""The PostgreSQL lockdown: the session settings the engine sets, and the check every connection passes.

The owner's data stays in its database and the sandbox connects with a role the owner made for it. What
that role may do is the owner's to grant, so the sandbox cannot lock it down by itself; it checks instead,
on every connection before it serves (the first at start, each one the pool opens), and refuses a
connection whose role could do more than read the served tables:

- the role is no superuser, cannot create roles or databases, replicate or bypass row security, and is no
  member of the roles that read or write server files, run server programs or read or write all data;
- it holds no CREATE on the database or on any schema, and no privilege but SELECT on any table, and
  SELECT only on the served tables;
- no untrusted procedural language is installed (a function written in one runs as the server's account);
- the session is read-only by default, with a bounded ``statement_timeout``, ``work_mem`` and
  ``temp_file_limit``, and a fixed ``search_path`` (``pg_catalog`` only: the guard qualifies every table,
  and no schema the role could reach shadows a function);
- probes: ``pg_read_file`` and ``COPY ... TO PROGRAM`` are refused for lack of privilege.

``temp_file_limit`` can only be set by a superuser, so the owner sets it on the role
(``ALTER ROLE ... SET temp_file_limit = '1GB'``); the others the engine sets on each session itself and
reads back. The guard refuses ``SET`` and every other statement but one SELECT, and a query runs in a
transaction whose ``SET LOCAL`` ends with it, so a session keeps what is checked here.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from dsbroker.errors import DsbrokerError
from sandbox.engine.interface import EngineLimits

SEARCH_PATH = "pg_catalog"
DATE_STYLE = "ISO, YMD"
WORK_MEM = "64MB"  # per sort or hash node of one query: the pool's queries together stay within memory_limit
WORK_MEM_MAX_KB = 1024 * 1024
TEMP_FILE_LIMIT_MAX_KB = 64 * 1024 * 1024  # what one session may spill to disk; -1 (unlimited) is refused
# Predefined roles whose members reach past the served tables (files, programs, every table).
_POWERFUL_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                   "pg_read_all_data", "pg_write_all_data")
_PROBES = {
    "pg_read_file allowed": "SELECT length(pg_read_file('/etc/hostname'))",
    "COPY TO PROGRAM allowed": "COPY (SELECT 1) TO PROGRAM 'true'",  # a harmless program, should it run
}
_USER_TABLES = """
    SELECT n.nspname || '.' || c.relname,
           has_any_column_privilege(c.oid, 'SELECT'),
           has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
           OR has_any_column_privilege(c.oid, 'INSERT, UPDATE, REFERENCES')
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
      AND n.nspname NOT LIKE 'pg\\_temp%'
"""


def session_statements(limits: EngineLimits) -> list[str]:
    """The SET statements the engine runs on each new session, before it is checked."""
    return [
        "SET default_transaction_read_only = on",
        f"SET statement_timeout = {int(limits.max_execution_ms)}",
        f"SET work_mem = '{WORK_MEM}'",
        f"SET search_path = {SEARCH_PATH}",
        # Dates as text the way DuckDB writes them: noise mode ranks a taxpayer's cells by a hash of their text.
        f"SET DateStyle = '{DATE_STYLE}'",
    ]


def lock_down(connection: psycopg.Connection, limits: EngineLimits, served: set[str]) -> None:
    """Set the session's settings on ``connection`` (autocommit), then check it; refuse it otherwise."""
    for statement in session_statements(limits):
        connection.execute(statement)
    wrong = connection_problems(connection, limits, served)
    if wrong:
        raise DsbrokerError(f"the PostgreSQL connection is not locked down ({'; '.join(wrong)}); refusing to serve",
                            reason="ENGINE_NOT_LOCKED_DOWN")


def connection_problems(connection: psycopg.Connection, limits: EngineLimits, served: set[str]) -> list[str]:
    """What does not hold on ``connection`` (autocommit), each named; empty when it is locked down."""
    return (_role_problems(connection) + _privilege_problems(connection, served)
            + _setting_problems(connection, limits) + _probe_problems(connection))


def _role_problems(connection: psycopg.Connection) -> list[str]:
    row = connection.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_catalog.pg_roles "
        "WHERE rolname = current_user").fetchone()
    if row is None:
        return ["the role is not in pg_roles"]
    wrong = [attribute for attribute, held in zip(
        ("superuser", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS"), row, strict=True) if held]
    for role in _POWERFUL_ROLES:
        member = connection.execute(
            "SELECT to_regrole(%s) IS NOT NULL AND pg_has_role(current_user, to_regrole(%s), 'MEMBER')",
            [role, role]).fetchone()
        if member and member[0]:
            wrong.append(f"member of {role}")
    return wrong


def _privilege_problems(connection: psycopg.Connection, served: set[str]) -> list[str]:
    wrong = []
    if connection.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone() == (True,):
        wrong.append("CREATE on the database")
    schemas = [row[0] for row in connection.execute(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE has_schema_privilege(oid, 'CREATE') "
        "AND nspname NOT LIKE 'pg\\_temp%' AND nspname NOT LIKE 'pg\\_toast\\_temp%' ORDER BY nspname")]
    if schemas:
        wrong.append(f"CREATE on schema {', '.join(schemas)}")
    readable, writable = [], []
    for table, can_read, can_write in connection.execute(_USER_TABLES):
        if can_read and table not in served:
            readable.append(table)
        if can_write:
            writable.append(table)
    if readable:
        wrong.append(f"SELECT on tables not served: {', '.join(sorted(readable))}")
    if writable:
        wrong.append(f"privileges beyond SELECT on {', '.join(sorted(writable))}")
    languages = [row[0] for row in connection.execute(
        "SELECT lanname FROM pg_catalog.pg_language WHERE NOT lanpltrusted AND lanname NOT IN ('internal', 'c') "
        "ORDER BY lanname")]
    if languages:
        wrong.append(f"untrusted language {', '.join(languages)} installed")
    return wrong


def _setting_problems(connection: psycopg.Connection, limits: EngineLimits) -> list[str]:
    wrong = []
    if _setting(connection, "default_transaction_read_only") != "on":
        wrong.append("default_transaction_read_only is not on")
    if not 0 < _number(connection, "statement_timeout") <= limits.max_execution_ms:  # in ms; 0 is none
        wrong.append("statement_timeout is not bounded")
    if not 0 < _number(connection, "work_mem") <= WORK_MEM_MAX_KB:
        wrong.append("work_mem is not bounded")
    if not 0 <= _number(connection, "temp_file_limit") <= TEMP_FILE_LIMIT_MAX_KB:  # in kB; -1 is unlimited
        wrong.append("temp_file_limit is not bounded (the owner sets it on the role)")
    if _setting(connection, "search_path") != SEARCH_PATH:
        wrong.append(f"search_path is not {SEARCH_PATH}")
    if _setting(connection, "DateStyle") != DATE_STYLE.lower():
        wrong.append(f"DateStyle is not {DATE_STYLE}")
    return wrong


def _probe_problems(connection: psycopg.Connection) -> list[str]:
    """Each probe must fail for lack of privilege; any other outcome (even a missing file) means it was let in."""
    wrong = []
    for problem, statement in _PROBES.items():
        try:
            connection.execute(statement)
        except pg_errors.InsufficientPrivilege:
            continue
        except psycopg.Error:
            pass
        wrong.append(problem)
    return wrong


def _setting(connection: psycopg.Connection, name: str) -> str:
    row = connection.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = %s", [name]).fetchone()
    return str(row[0]).strip().lower() if row else ""


def _number(connection: psycopg.Connection, name: str) -> int:
    """A numeric setting in its base unit (ms, kB); -2 when it is missing or not a number."""
    value = _setting(connection, name)
    return int(value) if value.lstrip("-").isdigit() else -2
