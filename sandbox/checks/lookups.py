"""A policy's lookups, checked against the tables this sandbox serves before a query joins them.

A grant may name code lists (``lookups``) that queries join on a key. Nothing else compares what the
policy names with the owner's data: a lookup table that is not served, a key or a column it lacks,
or a key the dataset lacks made the engine fail (INTERNAL ``EXECUTION_FAILED``), and a key that is
not unique in its table made a join repeat rows, which the threshold never sees. So:

- at start, the sandbox reads the columns of every table it serves (what can be known then, since
  policies arrive with plans);
- before a plan that joins lookups runs, each joined lookup is checked against them: the table is
  served, it has the key and the columns the policy names, the dataset has the column the key joins
  (the key's own name, or the grant's ``joins``), both are of one type class (text with text, numbers
  with numbers: a join across types makes the engine cast every value), and the key is unique in the
  lookup table (counted once per table and key, the data being read-only);
- a problem is FAILED_PRECONDITION naming the grant, the table and the column: the grant is at
  fault, not the query, and its owner fixes it (``dsbroker policy lint --sandbox-config`` finds the
  same problems before signing).

A grant may also list a column's values (``values``, a code list written into the grant), which the guard
uses to answer ``<>`` and ``NOT IN`` as the IN list of the other values: a value the data holds and the list
lacks would be left out of such an answer. Only lint checks that (:meth:`LookupChecker.unlisted_values`), for
the owner before signing: a check at each plan would make whether a query runs depend on the data.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

import sqlglot.expressions as exp

from dsbroker.errors import DsbrokerError
from dsbroker.guard.column_types import type_class
from dsbroker.policy.model import Policy

UNIQUENESS_SECONDS = 30.0


class LookupChecker:
    """Checks the lookups a policy names against the served tables' columns and keys."""

    def __init__(self, columns: dict[str, set[str]], *, unique: Callable[[str, str], bool],
                 unlisted: Callable[[str, str, tuple[str, ...]], bool] | None = None,
                 types: dict[str, dict[str, str]] | None = None) -> None:
        """``columns`` holds each served table's column names (``types``, where known, their engine types);
        ``unique(table, key)`` counts whether ``key`` is unique in ``table``; ``unlisted(table, column, values)``
        whether ``column`` holds a value (not NULL) outside ``values``."""
        self.columns = columns
        self.types = types or {}
        self._unique = unique
        self._unlisted = unlisted
        self._known_unique: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_engine(cls, engine, served: Iterable[str]) -> LookupChecker:
        """A checker over ``engine``'s ``served`` tables, their columns read now."""
        def unique(table: str, key: str) -> bool:
            # Written by sqlglot in the engine's dialect: Spark reads a double-quoted name as a string.
            column = exp.column(key, quoted=True)
            same = exp.EQ(this=exp.Count(this=column),
                          expression=exp.Count(this=exp.Distinct(expressions=[column.copy()])))
            query = exp.select(same).from_(exp.to_table(table, quoted=True))
            result = engine.execute(query.sql(dialect=engine.dialect), timeout_s=UNIQUENESS_SECONDS, max_rows=1)
            return bool(result.rows[0][0])

        def unlisted(table: str, column: str, values: tuple[str, ...]) -> bool:
            tested = exp.column(column, quoted=True)
            outside = exp.and_(exp.Not(this=exp.Is(this=tested, expression=exp.Null())),
                               exp.Not(this=tested.copy().isin(*(exp.Literal.string(v) for v in values))))
            query = exp.select(exp.Literal.number(1)).from_(exp.to_table(table, quoted=True)).where(outside).limit(1)
            return bool(engine.execute(query.sql(dialect=engine.dialect), timeout_s=UNIQUENESS_SECONDS,
                                       max_rows=1).rows)
        types = {table: dict(engine.columns(table)) for table in served}
        return cls({table: set(columns) for table, columns in types.items()}, unique=unique, unlisted=unlisted,
                   types=types)

    def unlisted_values(self, policy: Policy) -> list[DsbrokerError]:
        """A problem for each column of ``values`` that holds a value the grant does not list (lint only)."""
        if self._unlisted is None or policy.dataset not in self.columns:
            return []
        return [_problem(f"values: {policy.dataset} holds values of {column!r} that grant {policy.id!r} does not "
                         "list; <> and NOT IN on it would leave their rows out. List every value",
                         "LOOKUP_INVALID", policy, policy.dataset, column)
                for column, values in policy.values.items()
                if column in self.columns[policy.dataset] and self._unlisted(policy.dataset, column, values)]

    def check(self, policy: Policy, tables: Iterable[str] | None = None) -> None:
        """Raise the first problem of the lookups in ``tables`` (all the policy's by default)."""
        problems = self.problems(policy, tables)
        if problems:
            raise problems[0]

    def problems(self, policy: Policy, tables: Iterable[str] | None = None) -> list[DsbrokerError]:
        """Every problem of the lookups in ``tables`` (all the policy's by default), in the policy's order."""
        wanted = set(policy.lookups if tables is None else tables)
        found: list[DsbrokerError] = []
        for table, lookup in policy.lookups.items():
            if table not in wanted:
                continue
            if table not in self.columns:
                found.append(_problem(f"grant {policy.id!r} joins lookup {table}, which this sandbox does not serve",
                                      "LOOKUP_NOT_SERVED", policy, table))
                continue
            missing = [c for c in (lookup.key, *lookup.columns) if c not in self.columns[table]]
            if missing:
                found.extend(_problem(f"lookup {table} of grant {policy.id!r} has no column {column!r}",
                                      "LOOKUP_INVALID", policy, table, column) for column in missing)
                continue
            if lookup.joins not in self.columns.get(policy.dataset, ()):
                found.append(_problem(f"grant {policy.id!r} joins lookup {table} on {lookup.joins!r}, which "
                                      f"{policy.dataset} does not have", "LOOKUP_INVALID", policy, policy.dataset,
                                      lookup.joins))
                continue
            kinds = [type_class(self.types[t][c]) for t, c in ((table, lookup.key), (policy.dataset, lookup.joins))
                     if c in self.types.get(t, {})]
            if len(kinds) == 2 and kinds[0] != kinds[1]:
                found.append(_problem(f"the key {lookup.key!r} of lookup {table} (grant {policy.id!r}) holds "
                                      f"{kinds[0]} and {policy.dataset}.{lookup.joins} {kinds[1]}, so a join would "
                                      "cast every value; the owner must store both alike", "LOOKUP_INVALID", policy,
                                      table, lookup.key))
                continue
            if not self._is_unique(table, lookup.key):
                found.append(_problem(f"the key {lookup.key!r} of lookup {table} (grant {policy.id!r}) is not unique "
                                      "in it, so a join would repeat rows", "LOOKUP_KEY_NOT_UNIQUE", policy, table,
                                      lookup.key))
        return found

    def _is_unique(self, table: str, key: str) -> bool:
        with self._lock:
            known = self._known_unique.get((table, key))
        if known is None:
            known = self._unique(table, key)
            with self._lock:
                self._known_unique[(table, key)] = known
        return known


def _problem(message: str, reason: str, policy: Policy, table: str, column: str | None = None) -> DsbrokerError:
    return DsbrokerError(message, reason=reason, policy=policy.id, table=table, column=column)
