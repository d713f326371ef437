"""The broker's workflow state: access requests and policies, in SQLite (one file) or PostgreSQL.

One schema and one set of statements serve both engines; only the connection and the parameter
style differ. Every change is a compare-and-set on a version column, so two brokers (or two
threads) racing to move the same request leave exactly one outcome: the loser's update matches no
row and it reports the state the winner left.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from dsbroker.errors import ConfigError, DsbrokerError, StoreError
from dsbroker.database import (Durability, connect_postgres, is_database_error, is_postgres, open_sqlite,
                               postgres_errors, without_password)
from broker.workflow.request_states import State
from broker.permissions import Scope

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS access_requests (
        id TEXT PRIMARY KEY,
        department TEXT NOT NULL,
        district TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        policy_id TEXT NOT NULL,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS access_requests_by_time ON access_requests (created_at, id)",
    "CREATE INDEX IF NOT EXISTS access_requests_by_policy ON access_requests (policy_id)",
    """CREATE TABLE IF NOT EXISTS policies (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        department TEXT NOT NULL,
        document TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        request_id TEXT NOT NULL,
        state_reason TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        revision INTEGER NOT NULL,
        district TEXT NOT NULL DEFAULT '')""",
    # The owner's signed statements (revocations), kept as signed: they are also written beside the
    # policy files and held by the sandboxes, so losing this table loses no revocation.
    """CREATE TABLE IF NOT EXISTS policy_statements (
        sha256 TEXT PRIMARY KEY,
        policy_id TEXT NOT NULL,
        statement TEXT NOT NULL,
        received_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS policy_statements_by_policy ON policy_statements (policy_id, received_at)",
    # Owner-signed bodies of a policy version other than the one stored, which the broker refused to install
    # (one body per version): while the stored version has one, queries under it are refused. Kept, not only
    # logged, so that every replica refuses, and a restart on the same store too.
    """CREATE TABLE IF NOT EXISTS policy_bodies_refused (
        policy_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        body_sha256 TEXT NOT NULL,
        document TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (policy_id, version, body_sha256))""",
)
# Columns added since a table was first created: (table, column, definition), added when missing.
_ADDED_COLUMNS = (("policies", "district", "TEXT NOT NULL DEFAULT ''"),)
_REQUEST_COLUMNS = "id, department, district, state, version, created_at, updated_at, policy_id, body"
_POLICY_COLUMNS = ("id, version, state, department, document, sha256, request_id, state_reason, updated_at, revision, "
                   "district")


@dataclass(frozen=True)
class StoredRequest:
    """One access request as stored: indexed columns plus the request's fields in ``body``."""

    id: str
    department: str
    district: str
    state: State
    version: int
    created_at: str
    updated_at: str
    policy_id: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    def moved(self, state: State, at: str, **body: Any) -> StoredRequest:
        """A copy in ``state`` at ``at`` with ``body`` fields updated (the version moves on when stored)."""
        return replace(self, state=state, updated_at=at, body={**self.body, **body})


@dataclass(frozen=True)
class StoredPolicy:
    """One policy the broker serves: its signed document and where it stands."""

    id: str
    version: int
    state: State
    department: str
    document: str
    sha256: str
    request_id: str
    state_reason: str
    updated_at: str
    revision: int = 0
    district: str = ""  # the grantee's district ("" for a policy that names none): who may see it


class Store:
    """Requests and policies in one database; ``open_store`` picks the engine from the location."""

    def __init__(self, connect, *, placeholder: str, lock: threading.Lock | None) -> None:
        self._connect = connect
        self._placeholder = placeholder
        self._lock = lock or _NoLock()
        self._local = threading.local()
        with self._transaction() as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement)
            for table, column, definition in _ADDED_COLUMNS:
                if placeholder == "?":  # SQLite: no ADD COLUMN IF NOT EXISTS
                    if column not in {row[1] for row in cursor.execute(f"PRAGMA table_info({table})").fetchall()}:
                        cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                else:
                    cursor.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}")

    # -- requests --------------------------------------------------------------------------------

    def create_request(self, request: StoredRequest) -> StoredRequest:
        """Insert a new request (version 1)."""
        stored = replace(request, version=1)
        with self._transaction() as cursor:
            self._execute(cursor, f"INSERT INTO access_requests ({_REQUEST_COLUMNS}) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _request_row(stored))
        return stored

    def get_request(self, request_id: str) -> StoredRequest | None:
        """The request ``request_id``, or None."""
        with self._transaction() as cursor:
            row = self._execute(cursor, f"SELECT {_REQUEST_COLUMNS} FROM access_requests WHERE id = ?",
                                (request_id,)).fetchone()
        return _request(row) if row else None

    def list_requests(self, *, department: str | None = None, district: str | None = None,
                      state: State | None = None, after: tuple[str, str] | None = None,
                      limit: int = 50, scope: Scope | None = None) -> list[StoredRequest]:
        """Requests newest first, optionally of one department, district or state, after a (created_at, id) key,
        within what ``scope`` (broker.permissions) lets a caller see."""
        where, params = _scoped(scope)
        for column, value in (("department", department), ("district", district),
                              ("state", state.value if state else None)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if after is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [after[0], after[0], after[1]]
        sql = f"SELECT {_REQUEST_COLUMNS} FROM access_requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._transaction() as cursor:
            rows = self._execute(cursor, sql, (*params, limit)).fetchall()
        return [_request(row) for row in rows]

    def replace_request(self, request: StoredRequest) -> StoredRequest | None:
        """Store ``request`` if nobody changed it since it was read (same version); None if they did."""
        with self._transaction() as cursor:
            return self._replace_request(cursor, request)

    def activate(self, request: StoredRequest, policy: StoredPolicy) -> StoredRequest | None:
        """In one transaction: store the ACTIVE ``request`` (compare-and-set) and its new ``policy``.

        None when the request changed meanwhile; then nothing is written.
        """
        with self._transaction() as cursor:
            stored = self._replace_request(cursor, request)
            if stored is None:
                return None
            if self._execute(cursor, "SELECT 1 FROM policies WHERE id = ?", (policy.id,)).fetchone():
                raise StoreError(f"policy {policy.id!r} already exists", reason="POLICY_EXISTS",
                                 policy=policy.id)
            self._insert_policy(cursor, policy)
        return stored

    # -- policies --------------------------------------------------------------------------------

    def get_policy(self, policy_id: str) -> StoredPolicy | None:
        """The policy ``policy_id``, or None."""
        with self._transaction() as cursor:
            row = self._execute(cursor, f"SELECT {_POLICY_COLUMNS} FROM policies WHERE id = ?",
                                (policy_id,)).fetchone()
        return _policy(row) if row else None

    def list_policies(self, *, department: str | None = None, after: str | None = None,
                      limit: int = 50, scope: Scope | None = None) -> list[StoredPolicy]:
        """Policies ordered by id, optionally of one department, after an id, within what ``scope``
        (broker.permissions) lets a caller see."""
        where, params = _scoped(scope)
        if department is not None:
            where.append("department = ?")
            params.append(department)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        sql = f"SELECT {_POLICY_COLUMNS} FROM policies" + (" WHERE " + " AND ".join(where) if where else "")
        with self._transaction() as cursor:
            rows = self._execute(cursor, sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [_policy(row) for row in rows]

    def register_policy(self, policy: StoredPolicy) -> StoredPolicy:
        """Record a policy installed as a file, unless the store already knows its id; returns the stored one."""
        with self._transaction() as cursor:
            row = self._execute(cursor, f"SELECT {_POLICY_COLUMNS} FROM policies WHERE id = ?",
                                (policy.id,)).fetchone()
            if row:
                return _policy(row)
            self._insert_policy(cursor, policy)
        return policy

    def replace_policy_document(self, policy: StoredPolicy, *, version: int, document: str, sha256: str,
                                at: str, district: str | None = None) -> StoredPolicy | None:
        """Install a new version of ``policy`` (as read, compare-and-set on its revision), keeping its state;
        ``district`` is the new document's grantee district (unchanged when None)."""
        district = policy.district if district is None else district
        replaced = replace(policy, version=version, document=document, sha256=sha256, updated_at=at,
                           revision=policy.revision + 1, district=district)
        with self._transaction() as cursor:
            updated = self._execute(cursor, "UPDATE policies SET version = ?, document = ?, sha256 = ?, "
                                    "updated_at = ?, revision = ?, district = ? WHERE id = ? AND revision = ?",
                                    (version, document, sha256, at, replaced.revision, district, policy.id,
                                     policy.revision)).rowcount
        return replaced if updated == 1 else None

    def move_policy(self, policy: StoredPolicy, state: State, *, reason: str, at: str) -> StoredPolicy | None:
        """Move ``policy`` (as read, compare-and-set on its revision) and its request to ``state``.

        None when the policy changed meanwhile; then nothing is written.
        """
        moved = replace(policy, state=state, state_reason=reason, updated_at=at, revision=policy.revision + 1)
        with self._transaction() as cursor:
            updated = self._execute(cursor, "UPDATE policies SET state = ?, state_reason = ?, updated_at = ?, "
                                    "revision = ? WHERE id = ? AND revision = ?",
                                    (state.value, reason, at, moved.revision, policy.id, policy.revision)).rowcount
            if updated != 1:
                return None
            for row in self._execute(cursor, f"SELECT {_REQUEST_COLUMNS} FROM access_requests WHERE policy_id = ?",
                                     (policy.id,)).fetchall():
                request = _request(row)
                body = {**request.body, "state_reason": reason}
                self._replace_request(cursor, replace(request, state=state, updated_at=at, body=body))
        return moved

    def add_statement(self, *, sha256: str, policy_id: str, statement: str, at: str) -> bool:
        """Keep an owner's statement (verified by the caller); False when it is kept already."""
        with self._transaction() as cursor:
            return self._execute(cursor, "INSERT INTO policy_statements (sha256, policy_id, statement, received_at) "
                                 "VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                                 (sha256, policy_id, statement, at)).rowcount == 1

    def statements(self, policy_id: str | None = None) -> list[str]:
        """The owner's statements kept (about ``policy_id``, or all), oldest first."""
        sql = "SELECT statement FROM policy_statements"
        params: tuple = ()
        if policy_id is not None:
            sql, params = sql + " WHERE policy_id = ?", (policy_id,)
        with self._transaction() as cursor:
            return [row[0] for row in self._execute(cursor, sql + " ORDER BY received_at, sha256", params).fetchall()]

    def refuse_body(self, *, policy_id: str, version: int, body_sha256: str, document: str, at: str,
                    source: str) -> bool:
        """Keep a second owner-signed body of ``policy_id`` at ``version`` (verified by the caller), refused;
        False when it is kept already."""
        with self._transaction() as cursor:
            return self._execute(cursor, "INSERT INTO policy_bodies_refused (policy_id, version, body_sha256, "
                                 "document, seen_at, source) VALUES (?, ?, ?, ?, ?, ?) "
                                 "ON CONFLICT (policy_id, version, body_sha256) DO NOTHING",
                                 (policy_id, version, body_sha256, document, at, source)).rowcount == 1

    def refused_bodies(self, policy_id: str | None = None,
                       version: int | None = None) -> list[tuple[str, int, str, str]]:
        """The refused bodies kept as (policy id, version, body SHA-256, signed document), of ``policy_id`` at
        ``version`` when given, oldest first."""
        sql, params = "SELECT policy_id, version, body_sha256, document FROM policy_bodies_refused", ()
        if policy_id is not None:
            sql, params = sql + " WHERE policy_id = ? AND version = ?", (policy_id, version)
        with self._transaction() as cursor:
            return [tuple(row) for row in self._execute(cursor, sql + " ORDER BY seen_at, body_sha256",
                                                        params).fetchall()]

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- plumbing --------------------------------------------------------------------------------

    def _replace_request(self, cursor, request: StoredRequest) -> StoredRequest | None:
        stored = replace(request, version=request.version + 1)
        updated = self._execute(
            cursor, "UPDATE access_requests SET state = ?, version = ?, updated_at = ?, policy_id = ?, body = ? "
            "WHERE id = ? AND version = ?",
            (stored.state.value, stored.version, stored.updated_at, stored.policy_id,
             json.dumps(stored.body, ensure_ascii=False, sort_keys=True), request.id, request.version)).rowcount
        return stored if updated == 1 else None

    def _insert_policy(self, cursor, policy: StoredPolicy) -> None:
        self._execute(cursor, f"INSERT INTO policies ({_POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (policy.id, policy.version, policy.state.value, policy.department, policy.document,
                       policy.sha256, policy.request_id, policy.state_reason, policy.updated_at, policy.revision,
                       policy.district))

    def _execute(self, cursor, sql: str, params: tuple = ()):
        if self._placeholder != "?":
            sql = sql.replace("?", self._placeholder)
        cursor.execute(sql, params)
        return cursor

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            connection = getattr(self._local, "connection", None)
            try:
                if connection is None:
                    connection = self._local.connection = self._connect()
                cursor = connection.cursor()
                yield cursor
                connection.commit()
            except DsbrokerError:
                connection.rollback()
                raise
            except Exception as error:
                try:
                    if connection is not None:
                        connection.rollback()
                except Exception:  # the connection itself is gone; drop it and reconnect next time
                    self._local.connection = None
                if is_database_error(error):
                    raise StoreError("the broker's state store is unavailable; nothing was changed") from error
                raise


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc) -> None:
        return None


def open_store(location: str) -> Store:
    """Open the store at ``location``: a ``postgresql://`` DSN, or a SQLite file path."""
    if is_postgres(location):
        try:
            return Store(lambda: connect_postgres(location), placeholder="%s", lock=None)
        except (*postgres_errors(), StoreError) as error:
            cause = error.__cause__ or error
            raise ConfigError(f"cannot open the PostgreSQL store at {without_password(location)} "
                              f"({cause.__class__.__name__})") from None
    shared = {}

    def connect_sqlite():
        # One connection for every thread, serialised by the store's lock; WAL lets readers and other
        # processes in, and the busy timeout makes a second broker wait rather than fail.
        if "connection" not in shared:
            shared["connection"] = open_sqlite(location, durability=Durability.POWER_CUT)
        return shared["connection"]
    try:
        return Store(connect_sqlite, placeholder="?", lock=threading.Lock())
    except sqlite3.Error as error:
        raise ConfigError(f"cannot open the state store {location} ({error})") from None


def _request_row(request: StoredRequest) -> tuple:
    return (request.id, request.department, request.district, request.state.value, request.version,
            request.created_at, request.updated_at, request.policy_id,
            json.dumps(request.body, ensure_ascii=False, sort_keys=True))


def _request(row) -> StoredRequest:
    return StoredRequest(id=row[0], department=row[1], district=row[2], state=State(row[3]), version=row[4],
                         created_at=row[5], updated_at=row[6], policy_id=row[7], body=json.loads(row[8]))


def _policy(row) -> StoredPolicy:
    return StoredPolicy(id=row[0], version=row[1], state=State(row[2]), department=row[3], document=row[4],
                        sha256=row[5], request_id=row[6], state_reason=row[7], updated_at=row[8], revision=row[9],
                        district=row[10])


def _scoped(scope: Scope | None) -> tuple[list[str], list]:
    """The WHERE terms and parameters that keep a list within ``scope`` (the same rule as may_see)."""
    if scope is None or scope.everything:
        return [], []
    if scope.district:
        return ["(department = ? OR (district = ? AND district <> ''))"], [scope.department, scope.district]
    return ["department = ?"], [scope.department]
