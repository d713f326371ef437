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

Memory is bounded and spilling refused, deliberately: ``memory_limit`` is the
most DuckDB holds (its buffer pool and every query's working set), and a query
that needs more fails with DuckDB's out-of-memory error rather than writing its
intermediate rows to disk. DuckDB spills through the local file system, which
the lockdown disables; with it enabled, ``enable_external_access = false`` still
lets a query read every path DuckDB itself uses (the data file whole, the
companies' names in it included, and the temp directory with other queries'
spilled rows), leaving the guard as the only layer. So the temp directory is
unset and its size 0, and both, with the memory limit and the threads, are read
back from every connection: an instance whose settings were changed before the
engine opened it (another user of the same file in the process) is refused.
"""

from __future__ import annotations

import functools
import re

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
        "SET temp_directory = ''",
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
    "temp_directory": "",
}
# DuckDB reports an amount of memory as "1.8 GiB", "953.6 MiB" or "0 bytes"; no limit ('-1', 'none') it reports
# as "16383.9 PiB", which is no amount here, so that no limit is refused as one that cannot be read.
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?) ?(bytes|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_UNITS = {"bytes": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
    # Likewise a smaller memory limit or fewer threads are kept; none, more, or unreadable are refused.
    memory = reported_bytes(_setting(connection, "memory_limit"))
    if memory is None or not 0 < memory <= memory_limit_bytes(limits.memory_limit):
        wrong.append("memory_limit")
    threads = _setting(connection, "threads")
    if not threads.isdigit() or not 0 < int(threads) <= limits.threads:
        wrong.append("threads")
    return wrong


@functools.lru_cache(maxsize=32)  # read back on every connection, and on each answer's released tables
def memory_limit_bytes(memory_limit: str) -> int:
    """``memory_limit`` ("2GB", "512MiB", "50%" of the machine's) in bytes as DuckDB reports it once set (rounded
    as it rounds); DsbrokerError ``CONFIG_INVALID`` when DuckDB does not take it as an amount of memory, or it is
    no limit ("-1", "none")."""
    with duckdb.connect(":memory:") as scratch:
        try:
            scratch.execute(f"SET memory_limit = '{_quoted(memory_limit)}'")
        except duckdb.Error:
            amount = None
        else:
            amount = reported_bytes(_setting(scratch, "memory_limit"))
    if amount is None:
        raise DsbrokerError(f"memory_limit {memory_limit!r} is not an amount of memory (e.g. 2GB)",
                            reason="CONFIG_INVALID")
    return amount


def reported_bytes(value: str) -> int | None:
    """An amount of memory as ``duckdb_settings()`` reports it, in bytes; None for anything else (no limit)."""
    match = _AMOUNT.match(value.strip())
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else None


def lock_down(database: duckdb.DuckDBPyConnection, limits: EngineLimits) -> None:
    """Apply the lockdown, then verify it; refuse to serve from an instance that is not locked down.

    DuckDB shares one database instance per file within a process, so the
    instance may already be locked (by another engine on the same file); that
    is accepted only when the settings that matter have the locked-down values.
    """
    try:
        memory_limit_bytes(limits.memory_limit)  # refuse a limit that is not one before setting anything
    except DsbrokerError:
        database.close()  # as when the lockdown does not hold: the caller gets no connection to serve from
        raise
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
