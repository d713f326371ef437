"""One way to open a database: a SQLite file private to dsbroker's account, or PostgreSQL by DSN.

Every store, log and ledger opens its database here, so each gets the same file mode (0600, and so its
``-wal`` and ``-shm``), the same journal (WAL: readers and other processes are let in) and the same busy
timeout, and says how durable its commits are by name rather than by a PRAGMA at its call site:

- :attr:`Durability.POWER_CUT`: a commit is on the disk when it returns (``synchronous = FULL``). The
  broker's state and access log, the sandbox's policy, privacy and witness ledgers: what was acknowledged
  must survive a power cut.
- :attr:`Durability.PROCESS_CRASH`: a commit survives a crash of the process at once; a power cut may lose
  the last few (``synchronous = NORMAL``). The execution ledger, where a lost entry is loud (reconcile
  reports its release as never executed) and a flush per query would be paid by every query.

Readers that must not change a file (an auditor's copy) open it with :func:`open_sqlite_read_only`.
"""

from __future__ import annotations

import enum
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dsbroker.errors import ConfigError
from dsbroker.private_files import create_private

BUSY_SECONDS = 10.0  # how long a writer waits for another process's lock before it fails
POSTGRES_CONNECT_SECONDS = 5


class Durability(enum.Enum):
    """What a committed transaction survives (the SQLite ``synchronous`` setting that gives it)."""

    POWER_CUT = "FULL"
    PROCESS_CRASH = "NORMAL"


def open_sqlite(path: str | Path, *, durability: Durability, autocommit: bool = False) -> sqlite3.Connection:
    """Open (creating, private) the SQLite file at ``path`` for any thread, in WAL mode with ``durability``.

    ``autocommit`` leaves transactions to the caller's explicit ``BEGIN`` (``isolation_level=None``);
    otherwise Python's sqlite3 opens a deferred transaction before each write.
    """
    target = create_private(path)
    connection = sqlite3.connect(str(target), check_same_thread=False, timeout=BUSY_SECONDS,
                                 isolation_level=None if autocommit else "DEFERRED")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {durability.value}")
    return connection


def open_sqlite_read_only(path: str | Path) -> sqlite3.Connection:
    """Open the SQLite file at ``path`` read-only: nothing is created, migrated or written."""
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)


def is_postgres(location: str) -> bool:
    """Whether ``location`` is a PostgreSQL DSN rather than a SQLite path."""
    return location.startswith(("postgresql://", "postgres://"))


def connect_postgres(dsn: str, *, read_only: bool = False) -> Any:
    """A new psycopg connection to ``dsn``; ConfigError when psycopg is missing. ``read_only`` sessions
    refuse every write (``default_transaction_read_only``)."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("a PostgreSQL database needs the psycopg package") from None
    if not read_only:
        return psycopg.connect(dsn, connect_timeout=POSTGRES_CONNECT_SECONDS)
    # Added to the DSN's own options (a search_path, say), not in place of them.
    given = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
    return psycopg.connect(dsn, connect_timeout=POSTGRES_CONNECT_SECONDS,
                           options=f"{given} -c default_transaction_read_only=on".strip())


def postgres_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of the PostgreSQL driver (none when it is not installed)."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def without_password(dsn: str) -> str:
    """The DSN with any password masked, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def is_database_error(error: BaseException) -> bool:
    """Whether ``error`` came from SQLite or PostgreSQL (as opposed to a bug)."""
    return isinstance(error, (sqlite3.Error, *postgres_errors()))
