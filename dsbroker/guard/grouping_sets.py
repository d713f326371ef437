"""grouping_sets: the tables of totals a query may ask for, as the grouping sets they stand for.

``GROUP BY ROLLUP (a, b)``, ``CUBE (a, b)`` and ``GROUPING SETS ((a, b), (a), ())`` each ask for the cells
of several groupings of the same keys in one answer. The guard reads any of them into its keys and its sets
(per set, the indices of the keys it groups by), so that every later rule sees a plain GROUP BY of the keys;
the cell query gets the caller's form back (:func:`grouping_clause`). A ROLLUP's sets form a tree of
equations (each total is the sum of the rows one level down), which the sandbox's secondary suppression
protects; any other sets (a CUBE's margins, two unrelated groupings) do not, and the released-cell auditor
protects those (``sandbox.disclosure.release``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import sqlglot.expressions as exp

from dsbroker.guard._tree import refuse

MOST_SETS = 16  # a CUBE of four keys: each set more is a table the auditor weighs against every other


@dataclass(frozen=True)
class Totals:
    """What a query with totals asks for: its keys in order, the grouping sets (each the sorted indices of the
    keys it groups by), and the construct the caller wrote, for messages."""

    keys: tuple[exp.Expr, ...]
    sets: tuple[tuple[int, ...], ...]
    form: str

    @property
    def rollup(self) -> bool:
        """Whether the sets are a ROLLUP's: every leading run of the keys, the grand total included."""
        return is_rollup(self.sets, len(self.keys))


def is_rollup(sets: tuple[tuple[int, ...], ...], keys: int) -> bool:
    """Whether ``sets`` are exactly the leading runs of ``keys`` keys (a ROLLUP's sets, in any order)."""
    return sorted(sets, key=len) == [tuple(range(n)) for n in range(keys + 1)]


def read_totals(term: exp.Expr) -> Totals | None:
    """The totals a GROUP BY's only term asks for; None where it is a plain key."""
    if isinstance(term, exp.Rollup):
        keys = _distinct(term.expressions, "ROLLUP")
        return Totals(keys, tuple(tuple(range(n)) for n in range(len(keys), -1, -1)), "ROLLUP")
    if isinstance(term, exp.Cube):
        keys = _distinct(term.expressions, "CUBE")
        if 2 ** len(keys) > MOST_SETS:
            refuse("expand_output_aliases", "TOTALS_TOO_MANY_SETS", f"CUBE of {len(keys)} keys asks for "
                   f"{2 ** len(keys)} tables of totals; at most {MOST_SETS} are answered at once",
                   construct="CUBE")
        indices = range(len(keys))
        return Totals(keys, tuple(subset for n in range(len(keys), -1, -1) for subset in combinations(indices, n)),
                      "CUBE")
    if isinstance(term, exp.GroupingSets):
        return _grouping_sets(term)
    return None


def _grouping_sets(term: exp.GroupingSets) -> Totals:
    members = []
    for member in term.expressions:
        if isinstance(member, (exp.Rollup, exp.Cube, exp.GroupingSets)):
            refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", "GROUPING SETS lists its sets one by one, as "
                   "(a, b), (a) or (); write a ROLLUP or CUBE inside it out as its sets",
                   construct="GROUPING SETS")
        members.append(list(member.expressions) if isinstance(member, exp.Tuple) else
                       [member.this] if isinstance(member, exp.Paren) else [member])
    if not members:
        refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", "GROUPING SETS lists at least one set",
               construct="GROUPING SETS")
    if len(members) > MOST_SETS:
        refuse("expand_output_aliases", "TOTALS_TOO_MANY_SETS", f"GROUPING SETS lists {len(members)} sets; at most "
               f"{MOST_SETS} are answered at once", construct="GROUPING SETS")
    keys: list[exp.Expr] = []
    sets = []
    for member in members:
        indices = []
        for key in member:
            found = next((i for i, known in enumerate(keys) if known == key), None)
            if found is None:
                keys.append(key)
                found = len(keys) - 1
            if found in indices:
                refuse("expand_output_aliases", "TOTALS_KEY_REPEATED", "a key is listed twice in one grouping set",
                       construct="GROUPING SETS")
            indices.append(found)
        grouped = tuple(sorted(indices))
        if grouped in sets:
            refuse("expand_output_aliases", "TOTALS_SET_REPEATED", "a grouping set is listed twice in GROUPING SETS "
                   "(its cells would come twice)", construct="GROUPING SETS")
        sets.append(grouped)
    return Totals(tuple(keys), tuple(sets), "GROUPING SETS")


def _distinct(keys: list[exp.Expr], form: str) -> tuple[exp.Expr, ...]:
    if not keys:
        refuse("expand_output_aliases", "CONSTRUCT_NOT_ALLOWED", f"{form} lists the group keys, as {form}(a, b)",
               construct=form)
    return tuple(keys)  # a key listed twice is refused once aliases are expanded (reject_invalid_totals)


def grouping_clause(keys: Sequence[exp.Expr], sets: tuple[tuple[int, ...], ...]) -> exp.Expr:
    """The GROUP BY term that asks the engine for ``sets`` of ``keys``: ROLLUP or CUBE where the sets are
    theirs, else GROUPING SETS listing each."""
    if is_rollup(sets, len(keys)):
        return exp.Rollup(expressions=list(keys))
    if len(sets) == 2 ** len(keys):
        return exp.Cube(expressions=list(keys))
    return exp.GroupingSets(expressions=[exp.Tuple(expressions=[keys[i].copy() for i in grouped])
                                         for grouped in sets])
