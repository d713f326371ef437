"""A bounded cache of accepted plans, so a repeated query skips parsing and checking.

The key holds everything the guard's output depends on: the policy's content
hash (so an edited policy never reuses a plan), the caller's bound attributes
(district, department) and the exact SQL text. Refusals are not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

from broker.guard import GuardedQuery
from broker.policy import Policy


class PlanCache:
    """Least-recently-used cache of GuardedQuery by (policy hash, district, department, SQL)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._plans: OrderedDict[tuple, GuardedQuery] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_build(self, policy: Policy, district: str, department: str, unverified_sql: str,
                     build: Callable[[], GuardedQuery]) -> GuardedQuery:
        """The cached plan, or ``build()`` (which may raise) stored for next time."""
        key = (policy.sha256, policy.id, district, department, unverified_sql)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return plan
            self.misses += 1
        plan = build()
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan
