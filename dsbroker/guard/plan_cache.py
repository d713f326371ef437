"""A bounded cache of accepted plans, so a repeated query skips parsing and checking.

The key holds everything the guard's output depends on: the policy's content
hash (so an edited policy never reuses a plan), the caller's bound attributes
(district, department) and the SQL. The SQL is looked up twice: by its exact
text (a dashboard repeating itself costs a dictionary lookup), then by its
tokens, so a query that differs only in whitespace, comments or the case of
its keywords reuses the plan without being parsed again. Two texts with the
same tokens parse to the same tree, so they get the same plan. Refusals are
not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError

from dsbroker.guard import GuardedQuery
from dsbroker.guard.parse import admit
from dsbroker.policy.model import Policy

_TOKENIZER = DuckDB.tokenizer_class
_KEYWORDS = _TOKENIZER.KEYWORDS


class PlanCache:
    """Least-recently-used cache of GuardedQuery by (policy hash, district, department, mode, dialect, SQL)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._plans: OrderedDict[tuple, GuardedQuery] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_build(self, policy: Policy, district: str, department: str, unverified_sql: str,
                     build: Callable[[], GuardedQuery], *, encrypted: bool = False,
                     dialect: str = "duckdb") -> GuardedQuery:
        """The cached plan, or ``build()`` (which may raise) stored for next time; ``encrypted`` is the
        result mode and ``dialect`` the engine dialect ``build`` guards for (the same SQL guards differently
        in each).

        The size limit is checked first, so no lookup (not even of an exact text) reads a query too large."""
        admit(unverified_sql)
        scope = (policy.sha256, policy.id, district, department, encrypted, dialect)
        exact = (*scope, "text", unverified_sql)
        plan = self._get(exact)
        if plan is not None:
            return plan
        tokens = normalised_tokens(unverified_sql)
        keys = [exact] if tokens is None else [exact, (*scope, "tokens", tokens)]
        plan = self._get(keys[-1]) if tokens is not None else None
        if plan is None:
            with self._lock:
                self.misses += 1
            plan = build()
        with self._lock:
            for key in keys:
                self._plans[key] = plan
                self._plans.move_to_end(key)
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan

    def _get(self, key: tuple) -> GuardedQuery | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
            return plan


def normalised_tokens(sql: str) -> tuple | None:
    """The query's tokens without whitespace and comments, keywords in upper case; None if it does not tokenize.

    Only a token that is a keyword (its upper-cased text is that keyword) is case-folded: names keep
    their case, since an alias's case reaches the output.
    """
    try:
        tokens = _TOKENIZER().tokenize(sql)
    except TokenError:
        return None
    return tuple((token.token_type, token.text.upper() if _KEYWORDS.get(token.text.upper()) is token.token_type
                  else token.text) for token in tokens)
