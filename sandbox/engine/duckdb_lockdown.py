"""The DuckDB lockdown: the settings that lock a connection down, and the check every connection passes.

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

import duckdb

from dsbroker.errors import DsbrokerError
from sandbox.engine.interface import EngineLimits


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


def connection_problems(connection: duckdb.DuckDBPyConnection, limits: EngineLimits) -> list[str]:
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


def lock_down(database: duckdb.DuckDBPyConnection, limits: EngineLimits) -> None:
    """Apply the lockdown, then verify it; refuse to serve from an instance that is not locked down.

    DuckDB shares one database instance per file within a process, so the
    instance may already be locked (by another engine on the same file); that
    is accepted only when the settings that matter have the locked-down values.
    """
    already_locked = _setting(database, "lock_configuration") == "true"
    if not already_locked:
        for statement in lockdown_statements(limits):
            database.execute(statement)
    wrong = dict.fromkeys(connection_problems(database, limits), "")
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


def _quoted(value: str) -> str:
    return value.replace("'", "''")
