"""The garbage collector's settings for a server process.

CPython collects its youngest generation every 700 net allocations of container objects and, from there,
walks every object that survived into the older ones. A server allocates in bursts: an audit of a
4096-cell answer builds some 100,000 tuples and dicts, so with the defaults it paid about a third of its
time to collections that found almost nothing (``scripts/bench``'s auditor row; README: Performance).
Nothing here changes what is freed, only how often the collector looks for cycles.
"""

from __future__ import annotations

import gc

# Youngest generation collected every this many net allocations, the middle one every 20 of those, the
# oldest every 20 of the middle one's (and, as CPython always does, only once it has grown by a quarter).
YOUNG_THRESHOLD = 50_000
OLDER_THRESHOLD = 20


def tune_for_serving() -> None:
    """Set the process's collector for serving: what start-up built (modules, settings, catalogs, the
    policies) is frozen out of every later collection, and the young generation is collected less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
