"""Where the access log lives: a SQLite file (the default) or PostgreSQL through a DSN.

One set of statements serves both; only the connection, the placeholder, the write lock and the
triggers that make the tables append-only differ. Writes come from one thread at a time (the
log's group-commit writer) inside an exclusive transaction that re-reads the chain's tail, so two
brokers sharing one PostgreSQL log still build one chain.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from dsbroker.records.checkpoints import Checkpoint
from dsbroker.records.access_record import (BOUND_COLUMNS, GENESIS_HASH, LEGACY_COLUMNS, SEAL_COLUMNS, STORED_COLUMNS,
                                   StoredRecord, from_row, to_row)
from dsbroker.errors import ConfigError
from dsbroker.database import (Durability, connect_postgres, is_postgres, open_sqlite, open_sqlite_read_only,
                               postgres_errors, without_password)

_TABLES = """
CREATE TABLE IF NOT EXISTS access_log (
    seq {seq_type} PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    decision TEXT NOT NULL,
    subject TEXT NOT NULL,
    department TEXT NOT NULL,
    token_id TEXT NOT NULL,
    client TEXT NOT NULL,
    request_id TEXT NOT NULL,
    grant_id TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    policy_sha256 TEXT NOT NULL,
    sql TEXT NOT NULL,
    sql_sha256 TEXT NOT NULL,
    rewritten_sql TEXT NOT NULL,
    rewritten_sql_sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    sql_bytes BIGINT,
    rewritten_sql_bytes BIGINT,
    seal_key_id TEXT,
    seal TEXT
);
CREATE INDEX IF NOT EXISTS access_log_by_grant ON access_log (grant_id, event, decision, at);
CREATE INDEX IF NOT EXISTS access_log_by_time ON access_log (at);
CREATE TABLE IF NOT EXISTS access_log_checkpoints (
    size {seq_type} PRIMARY KEY,
    root TEXT NOT NULL,
    prev TEXT NOT NULL,
    at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""
_SQLITE_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
"""
_POSTGRES_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'the access log is append-only'; END $$;
CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION access_log_append_only();
CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
"""
_TABLE_NAMES = ("access_log", "access_log_checkpoints")
# Any constant will do: every broker writing this log takes the same transaction-scoped lock.
_POSTGRES_WRITE_LOCK = 0x64736272  # "dsbr"
_CHECKPOINT_COLUMNS = ("size", "root", "prev", "at", "key_id", "signature")
HASH_PAGE = 50_000  # record hashes read at a time for a consistency proof
# Columns added since the first version of the log, nullable so older rows keep their meaning.
_ADDED_COLUMNS = {**{name: "BIGINT" for name in BOUND_COLUMNS}, **{name: "TEXT" for name in SEAL_COLUMNS}}
# What the broker reads to check a range of the chain without loading whole records.
_CHAIN_COLUMNS = ("seq", "prev_hash", "hash", "seal_key_id", "seal")
# Filters ``records`` accepts, and the column each compares.
FILTERS = {"since": "at >= ?", "until": "at < ?", "department": "department = ?", "grant_id": "grant_id = ?",
           "decision": "decision = ?", "event": "event = ?", "request_id": "request_id = ?"}


@dataclass(frozen=True)
class RecordFilter:
    """Which records to list; empty fields match everything. Times are ISO 8601 in UTC."""

    since: str = ""
    until: str = ""
    department: str = ""
    grant_id: str = ""
    decision: str = ""
    event: str = ""
    request_id: str = ""

    def where(self) -> tuple[str, tuple]:
        """SQL conditions (joined by AND, with a leading AND) and their parameters."""
        terms = [(FILTERS[name], value) for name, value in asdict(self).items() if value]
        return "".join(f" AND {sql}" for sql, _ in terms), tuple(value for _, value in terms)


class LogStore:
    """The access log's tables; :func:`open_log_store` picks the engine from the location."""

    def __init__(self, location: str, connect, *, placeholder: str, postgres: bool, read_only: bool = False) -> None:
        """``read_only`` (an auditor's copy): nothing is created or migrated, and a log of other columns is
        refused rather than brought up to date."""
        self.location = location
        self._connect = connect
        self._placeholder = placeholder
        self._postgres = postgres
        self._write_connection = None
        self._read_connection = None
        self._read_lock = threading.Lock()
        connection = connect()
        if read_only:
            try:
                if self._migration(connection) or not self._columns(connection):
                    raise ConfigError(f"the access log at {without_password(location)} is not one this version "
                                      "reads without changing it (no log, or one written before seals); verify it "
                                      "where a broker has opened it")
            finally:
                connection.close()
            return
        try:
            script = _TABLES.format(seq_type="BIGINT" if postgres else "INTEGER")
            for table in _TABLE_NAMES:
                script += (_POSTGRES_APPEND_ONLY if postgres else _SQLITE_APPEND_ONLY).format(table=table)
            if postgres:
                with connection.transaction():
                    # Under the write lock, so two brokers starting at once do not both migrate.
                    connection.execute(f"SELECT pg_advisory_xact_lock({_POSTGRES_WRITE_LOCK})")
                    for statement in self._migration(connection) + _statements(script):
                        connection.execute(statement)
            else:
                connection.execute("BEGIN IMMEDIATE")
                for statement in self._migration(connection):
                    connection.execute(statement)
                connection.commit()
                connection.executescript(script)
        finally:
            connection.close()

    # -- writing (one writer thread) -------------------------------------------------------------

    @contextmanager
    def write(self, *, synced: bool = True) -> Iterator[WriteTransaction]:
        """An exclusive transaction, committed when the block ends, rolled back on error.

        ``synced`` commits wait for the disk. Others are visible and survive a crash of this process
        at once, and reach the disk with the next synced commit (SQLite's WAL is flushed in order;
        PostgreSQL's asynchronous commit is flushed by the next synchronous one).
        """
        if self._write_connection is None:
            self._write_connection = self._connect()
        connection = self._write_connection
        try:
            cursor = connection.cursor()
            if self._postgres:
                cursor.execute(f"SELECT pg_advisory_xact_lock({_POSTGRES_WRITE_LOCK})")
                if not synced:
                    cursor.execute("SET LOCAL synchronous_commit TO off")
            else:
                cursor.execute(f"PRAGMA synchronous = {'FULL' if synced else 'NORMAL'}")
                cursor.execute("BEGIN IMMEDIATE")
            yield WriteTransaction(self, cursor)
            connection.commit()
        except BaseException:
            try:
                connection.rollback()
            except Exception:  # the connection is gone; open a new one for the next batch
                self._close_quietly(connection)
                self._write_connection = None
            raise

    # -- reading ---------------------------------------------------------------------------------

    def records(self, *, after: int = 0, limit: int | None = None,
                where: RecordFilter = RecordFilter()) -> list[StoredRecord]:
        """Records matching ``where`` after ``after``, in sequence order."""
        conditions, parameters = where.where()
        sql = (f"SELECT {', '.join(STORED_COLUMNS)} FROM access_log WHERE seq > ?{conditions} "
               "ORDER BY seq LIMIT ?")
        no_limit = None if self._postgres else -1
        rows = self._read(sql, (after, *parameters, limit if limit is not None else no_limit))
        return [from_row(dict(zip(STORED_COLUMNS, row, strict=True))) for row in rows]

    def record(self, seq: int) -> StoredRecord | None:
        """The record ``seq``, or None."""
        found = self.records(after=seq - 1, limit=1)
        return found[0] if found and found[0].seq == seq else None

    def hashes(self, after: int, upto: int, *, page: int = HASH_PAGE) -> Iterator[str]:
        """The hashes of records after..upto, in order, read ``page`` at a time (a log of millions of records
        is not held in memory at once)."""
        while after < upto:
            rows = self._read("SELECT seq, hash FROM access_log WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                              (after, min(upto, after + page), page))
            if not rows:
                return
            yield from (row[1] for row in rows)
            after = rows[-1][0]

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        rows = self._read(f"SELECT {', '.join(_CHECKPOINT_COLUMNS)} FROM access_log_checkpoints ORDER BY size", ())
        return [Checkpoint(**dict(zip(_CHECKPOINT_COLUMNS, row, strict=True))) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or None."""
        rows = self._read(f"SELECT {', '.join(_CHECKPOINT_COLUMNS)} FROM access_log_checkpoints "
                          "ORDER BY size DESC LIMIT 1", ())
        return Checkpoint(**dict(zip(_CHECKPOINT_COLUMNS, rows[0], strict=True))) if rows else None

    def size(self) -> int:
        """How many records the log holds (its last sequence number)."""
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM access_log", ())[0][0])

    def close(self) -> None:
        """Close both connections."""
        for connection in (self._write_connection, self._read_connection):
            if connection is not None:
                self._close_quietly(connection)
        self._write_connection = self._read_connection = None

    # -- plumbing --------------------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        """``statement`` with this engine's placeholder."""
        return statement if self._placeholder == "?" else statement.replace("?", self._placeholder)

    def _read(self, statement: str, parameters: tuple) -> list[tuple]:
        with self._read_lock:
            if self._read_connection is None:
                self._read_connection = self._connect()
            connection = self._read_connection
            try:
                cursor = connection.cursor()
                cursor.execute(self.sql(statement), parameters)
                rows = cursor.fetchall()
                connection.commit()  # end the read transaction, so the next read sees new records
                return rows
            except Exception:
                self._close_quietly(connection)
                self._read_connection = None
                raise

    def _migration(self, connection) -> list[str]:
        """What brings an existing table up to date: nothing for a current or missing table, the added
        columns for a log written before seals and bounded SQL; ConfigError for anything else."""
        found = self._columns(connection)
        if not found or found == set(STORED_COLUMNS):
            return []
        if found == set(LEGACY_COLUMNS):
            # Older rows keep NULL: no seal (a checkpoint covers them) and texts stored whole.
            return [f"ALTER TABLE access_log ADD COLUMN {name} {kind}" for name, kind in _ADDED_COLUMNS.items()]
        raise ConfigError(f"the access log at {without_password(self.location)} was written by another "
                          "version of dsbroker (its columns differ); keep it for auditors and start a new log")

    def missing_append_only_guards(self) -> list[str]:
        """The append-only triggers this log should have and does not: each one missing means its records
        or checkpoints could be changed in place (the broker puts them back when it opens the log, so an
        auditor's copy is where their absence shows)."""
        if self._postgres:
            expected = [f"{table}_{kind}" for table in _TABLE_NAMES for kind in ("no_change", "no_truncate")]
            query = ("SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                     "JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = current_schema() AND NOT t.tgisinternal AND t.tgenabled <> 'D'")
        else:
            expected = [f"{table}_{kind}" for table in _TABLE_NAMES for kind in ("no_update", "no_delete")]
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        found = {row[0] for row in self._read(query, ())}
        return [name for name in expected if name not in found]

    def _columns(self, connection) -> set[str]:
        """The access log table's columns (none when there is no table)."""
        cursor = connection.cursor()
        if self._postgres:
            cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'access_log' "
                           "AND table_schema = current_schema()")
            return {row[0] for row in cursor.fetchall()}
        return {row[1] for row in cursor.execute("PRAGMA table_info(access_log)").fetchall()}

    @staticmethod
    def _close_quietly(connection) -> None:
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - already broken; nothing more to release
            pass


class WriteTransaction:
    """What the writer may do inside one exclusive transaction."""

    def __init__(self, store: LogStore, cursor) -> None:
        self._store = store
        self._cursor = cursor

    def _execute(self, statement: str, parameters: tuple = ()):
        self._cursor.execute(self._store.sql(statement), parameters)
        return self._cursor

    def tail(self) -> tuple[int, str]:
        """The last record's (seq, hash), or (0, GENESIS_HASH) for an empty log."""
        row = self._execute("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1]) if row else (0, GENESIS_HASH)

    def record(self, seq: int) -> StoredRecord | None:
        """The whole record ``seq``, or None."""
        row = self._execute(f"SELECT {', '.join(STORED_COLUMNS)} FROM access_log WHERE seq = ?", (seq,)).fetchone()
        return from_row(dict(zip(STORED_COLUMNS, row, strict=True))) if row else None

    def records(self, after: int, upto: int) -> list[StoredRecord]:
        """The whole records after..upto, in order."""
        rows = self._execute(f"SELECT {', '.join(STORED_COLUMNS)} FROM access_log WHERE seq > ? AND seq <= ? "
                             "ORDER BY seq", (after, upto)).fetchall()
        return [from_row(dict(zip(STORED_COLUMNS, row, strict=True))) for row in rows]

    def hash_at(self, seq: int) -> str | None:
        """The stored hash of record ``seq``, or None when there is none."""
        row = self._execute("SELECT hash FROM access_log WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    def chain(self, after: int, upto: int) -> list[tuple[int, str, str, str, str]]:
        """(seq, prev_hash, hash, seal_key_id, seal) of records after..upto, in order (no seal: empty)."""
        rows = self._execute(f"SELECT {', '.join(_CHAIN_COLUMNS)} FROM access_log WHERE seq > ? AND seq <= ? "
                             "ORDER BY seq", (after, upto)).fetchall()
        return [(int(seq), prev, digest, key or "", signature or "") for seq, prev, digest, key, signature in rows]

    def insert(self, record: StoredRecord) -> None:
        """Append one sealed record."""
        row = to_row(record)
        self._execute(f"INSERT INTO access_log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                      tuple(row.values()))

    def count_allowed_queries(self, grant_id: str, since: str | None) -> int:
        """Allowed query decisions under ``grant_id`` (at or after ``since``, when given)."""
        statement = ("SELECT count(*) FROM access_log WHERE grant_id = ? AND event = 'query.decision' "
                     "AND decision = 'allow'")
        if since is None:
            return int(self._execute(statement, (grant_id,)).fetchone()[0])
        return int(self._execute(statement + " AND at >= ?", (grant_id, since)).fetchone()[0])

    def hashes(self, after: int, upto: int) -> list[str]:
        """The hashes of records after..upto, in order."""
        rows = self._execute("SELECT hash FROM access_log WHERE seq > ? AND seq <= ? ORDER BY seq",
                             (after, upto)).fetchall()
        return [row[0] for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or None."""
        row = self._execute(f"SELECT {', '.join(_CHECKPOINT_COLUMNS)} FROM access_log_checkpoints "
                            "ORDER BY size DESC LIMIT 1").fetchone()
        return Checkpoint(**dict(zip(_CHECKPOINT_COLUMNS, row, strict=True))) if row else None

    def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a signed checkpoint."""
        values = asdict(checkpoint)
        self._execute(f"INSERT INTO access_log_checkpoints ({', '.join(_CHECKPOINT_COLUMNS)}) "
                      f"VALUES ({', '.join('?' * len(_CHECKPOINT_COLUMNS))})",
                      tuple(values[c] for c in _CHECKPOINT_COLUMNS))


def open_log_store(location: str, *, read_only: bool = False) -> LogStore:
    """Open (creating if needed) the access log at ``location``: a postgresql:// DSN or a SQLite path.
    ``read_only`` opens it as an auditor reads a copy: nothing is created, migrated or written."""
    if is_postgres(location):
        try:
            return LogStore(location, lambda: connect_postgres(location, read_only=read_only), placeholder="%s",
                            postgres=True, read_only=read_only)
        except postgres_errors() as error:
            raise ConfigError(f"cannot open the access log at {without_password(location)} "
                              f"({error.__class__.__name__})") from None
    if read_only:
        if not Path(location).is_file():
            raise ConfigError(f"no access log at {location}")
        try:
            return LogStore(location, lambda: open_sqlite_read_only(location), placeholder="?", postgres=False,
                            read_only=True)
        except sqlite3.Error as error:
            raise ConfigError(f"cannot read the access log {location} ({error})") from None
    try:
        return LogStore(location, lambda: open_sqlite(location, durability=Durability.POWER_CUT), placeholder="?",
                        postgres=False)
    except sqlite3.Error as error:
        raise ConfigError(f"cannot open the access log {location} ({error})") from None


def _statements(script: str) -> list[str]:
    """Split a script into statements, keeping $$-quoted function bodies whole."""
    statements, current, quoted = [], [], False
    for part in script.split("$$"):
        if quoted:
            current.append("$$" + part + "$$")
        else:
            pieces = part.split(";")
            current.append(pieces[0])
            for piece in pieces[1:]:
                statements.append("".join(current))
                current = [piece]
        quoted = not quoted
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]
