"""What leaves the sandbox of an exact result: the flag columns read and dropped, withheld cells marked,
and, where the result holds totals, secondary suppression so that no withheld cell is a subtraction away.

The guard's SQL already made every cell under the threshold or dominated NULL. A cell that secondary
suppression withholds is made NULL here. Under ``suppressed: drop`` rows withheld by the threshold or
by secondary suppression are left out instead of marked; dominated cells are always marked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from broker.guard import GuardedQuery
from broker.guard.add_dominance_rule import FLAG_PREFIX
from broker.guard.add_entity_threshold import WITHHELD
from broker.guard.add_totals import ENTITIES, GROUPING


@dataclass
class Release:
    """The released table, with the cells withheld and by which rule."""

    names: list[str]
    types: list[str]
    rows: list[tuple]
    withheld: list[frozenset[int]]  # per row: the positions of its withheld cells
    rolled_up: list[frozenset[int]] = field(default_factory=list)  # per row: the key positions a total spans
    counts: dict[str, int] = field(default_factory=dict)  # cells withheld per rule: min_entities, dominance, secondary


def release(names: list[str], types: list[str], rows: list[tuple], guarded: GuardedQuery) -> Release:
    """Read the flag columns of an engine result for ``guarded``, apply secondary suppression, drop the flags."""
    width = guarded.outputs or len(names)
    flag = {name: width + i for i, name in enumerate(names[width:])}
    cells = set(guarded.aggregate_outputs)
    counts = {"min_entities": 0, "dominance": 0, "secondary": 0}
    under = [bool(row[flag[WITHHELD]]) if WITHHELD in flag else False for row in rows]
    dominated = []
    for row in rows:
        positions: set[int] = set()
        for i, outputs in enumerate(guarded.dominance_flags):
            if row[flag[f"{FLAG_PREFIX}{i}"]]:
                positions.update(outputs)
        dominated.append(positions)
    secondary = _secondary(rows, guarded, under, flag) if guarded.totals else set()
    drop = guarded.suppression == "drop"
    released, withheld, rolled_up = [], [], []
    for index, row in enumerate(rows):
        whole_row = under[index] or index in secondary
        if whole_row and drop:
            continue
        counts["min_entities"] += len(cells) if under[index] else 0
        counts["secondary"] += len(cells) if index in secondary and not under[index] else 0
        marked = set(cells) if whole_row else set()
        counts["dominance"] += len(dominated[index] - marked)
        marked |= dominated[index]
        values = tuple(None if i in marked else value for i, value in enumerate(row[:width]))
        released.append(values)
        withheld.append(frozenset(marked))
        if guarded.totals:
            bits = row[flag[GROUPING]]
            last = len(guarded.totals) - 1
            rolled_up.append(frozenset(p for k, p in enumerate(guarded.totals) if bits >> (last - k) & 1))
    return Release(names[:width], types[:width], released, withheld, rolled_up, counts)


def _secondary(rows: list[tuple], guarded: GuardedQuery, under: list[bool], flag: dict[str, int]) -> set[int]:
    """Rows to withhold besides those under the threshold, so that no withheld row of a ROLLUP is the
    difference of its total and its released siblings (nor a total the sum of released rows).

    Each total and the rows it adds up form one equation. While some equation has exactly one withheld
    member, withhold one more: the released sibling with the fewest entities, or, with none left, the
    total itself. Withholding only grows, so this ends; the result may withhold more than the least
    needed (finding the least is NP-hard), never less.
    """
    keys = len(guarded.totals)
    rows_by_level: dict[tuple, int] = {}
    for index, row in enumerate(rows):
        level = keys - bin(row[flag[GROUPING]]).count("1")
        rows_by_level[(level, tuple(row[p] for p in guarded.totals[:level]))] = index
    equations: dict[int, list[int]] = defaultdict(list)  # total's row -> the rows it adds up
    for (level, prefix), index in rows_by_level.items():
        if level > 0:
            equations[rows_by_level[(level - 1, prefix[:-1])]].append(index)
    withheld = {index for index, flagged in enumerate(under) if flagged}
    secondary: set[int] = set()
    changed = True
    while changed:
        changed = False
        for total, parts in equations.items():
            members = [total, *parts]
            if sum(member in withheld for member in members) != 1:
                continue
            candidates = [p for p in parts if p not in withheld] or [total]
            chosen = min(candidates, key=lambda i: (rows[i][flag[ENTITIES]], i))
            withheld.add(chosen)
            secondary.add(chosen)
            changed = True
    return secondary
