"""Combinations of released cells that are functions of fewer than k taxpayers' data.

The threshold rule withholds a cell of fewer than k taxpayers because any of them (or k - 2 of them together) can
take their own figures away and learn the rest's. The same holds for any combination of released cells whose
weights are nonzero only on blocks where, in all, fewer than k taxpayers contribute: a firm's two years as
``2 * 2025 + 2026``, one firm plus twice another, one small cell less another. So the auditor asks of the
combinations on failing blocks (the space :class:`sandbox.audit.auditor._Space` builds) whether one of them is
supported on blocks of fewer than k contributors, and the answer must not add one.

Finding the combination with the fewest contributors is the minimum distance problem of a linear code (NP-hard in
general), so the search is a branch and bound over sets of taxpayers, kept small by three facts:

- a combination supported on a set of columns exists when an echelon form with those columns after the others
  (and before the columns that hold no contributor, which add 0) has a pivot among them, and the number of such
  pivots is the dimension of the combinations there;
- a combination of least support lies in one connected part of the space (rows of its reduced echelon form that
  share columns), so each part is searched alone, and a part of fewer than k contributors is a leak whole;
- how many more dimensions the answer adds there than the cells released before gave can only grow with the set
  of columns, so a set where it adds none holds no new leak in any of its subsets.

Past ``MOST_TESTS`` rank tests the search raises :class:`TooComplex` and the auditor falls back to comparing the
space's dimension with and without the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sandbox.audit.linear import Row, TooComplex, reduced, split, supported_on

# The most rank tests one search runs before the space counts as too complex to search.
MOST_TESTS = 2_000


@dataclass(frozen=True)
class FewLeak:
    """A combination of fewer than k taxpayers: its columns (where it may be nonzero) and the rows it combines."""

    columns: frozenset[int]
    rows: frozenset[int]


def few_taxpayer_leaks(basis: list[Row], before: Callable[[], list[Row]], people: dict[int, set[Hashable]],
                       k: int, check: Callable[[], None], *, most_tests: int = MOST_TESTS) -> list[FewLeak]:
    """The combinations in the span of ``basis`` that are functions of fewer than ``k`` of ``people`` (the
    contributors of each column) and are not in the span of ``before()`` (the space without the answer, asked for
    only when needed): one leak per part of the space where some are found, with the rows that make it.

    Raises :class:`TooComplex` past ``most_tests`` rank tests."""
    used = sorted({c for row in basis for c in row.vector})
    empty = frozenset(c for c in used if not people[c])
    small = frozenset(c for c in used if c not in empty and len(people[c]) < k)
    if not small:
        return []
    search = _Search(used, empty, people, k, check, most_tests)
    new = search.within(basis, small)
    if not new:
        return []
    old_basis: list[list[Row]] = []

    def old() -> list[Row]:
        if not old_basis:
            old_basis.append(search.within(before(), small))
        return old_basis[0]

    search.old = old
    search.visit(frozenset(), small, new)
    return search.found


class _Search:
    """One branch and bound (module docstring). ``found`` collects the leaks, one per part where one is found."""

    def __init__(self, used: list[int], empty: frozenset[int], people: dict[int, set[Hashable]], k: int,
                 check: Callable[[], None], most_tests: int) -> None:
        self.used, self.empty, self.people, self.k = used, empty, people, k
        self.check, self.tests_left = check, most_tests
        self.old: Callable[[], list[Row]] = list
        self.found: list[FewLeak] = []
        self._seen: set[tuple[frozenset, frozenset[int]]] = set()
        self._covered: set[frozenset[int]] = set()  # parts where a leak was found already

    def within(self, rows: list[Row], allowed: frozenset[int]) -> list[Row]:
        """Rows spanning the combinations of ``rows`` nonzero only on ``allowed`` and the empty columns, less
        those on the empty columns alone."""
        self.tests_left -= 1
        if self.tests_left < 0:
            raise TooComplex("too many sets of few taxpayers to search")
        self.check()
        return supported_on(rows, allowed, self.used, self.empty)

    def _contributors(self, columns: frozenset[int]) -> set[Hashable]:
        return set().union(*(self.people[c] for c in columns))

    def _adds(self, rows: list[Row], columns: frozenset[int]) -> bool:
        """Whether ``rows`` (spanning the combinations on ``columns``) span more than the space without the answer
        gives there (it is a subspace: as many means the same)."""
        return len(rows) > len(self.within(self.old(), columns))

    def visit(self, taxpayers: frozenset, columns: frozenset[int], rows: list[Row]) -> None:
        """Search the combinations spanned by ``rows`` (those on ``columns``, each holding fewer than k with
        ``taxpayers``) for one of fewer than k contributors in all."""
        key = (taxpayers, columns)
        if key in self._seen:
            return
        self._seen.add(key)
        inside = frozenset(c for c in columns if self.people[c] <= taxpayers)
        if inside and inside != columns:
            on_inside = self.within(rows, inside)
            if on_inside and self._adds(on_inside, inside):
                self._report(inside, on_inside)
                return
        for part_columns, part in self._parts(rows):
            if part_columns in self._covered:
                continue
            if not self._adds(part, part_columns):
                continue
            if len(self._contributors(part_columns)) < self.k:
                self._report(part_columns, part)
                continue
            for column in sorted(part_columns):
                if self.people[column] <= taxpayers:
                    continue
                grown = taxpayers | self.people[column]
                narrower = frozenset(c for c in part_columns if len(grown | self.people[c]) < self.k)
                narrowed = self.within(part, narrower)
                if narrowed:
                    self.visit(grown, narrower, narrowed)

    def _parts(self, rows: list[Row]) -> list[tuple[frozenset[int], list[Row]]]:
        """The connected parts of the span of ``rows``, each with its columns other than the empty ones."""
        found = []
        for part in split(reduced([Row(dict(r.vector), dict(r.weights)) for r in rows])):
            columns = frozenset(c for row in part for c in row.vector if c not in self.empty)
            if columns:
                found.append((columns, part))
        return found

    def _report(self, columns: frozenset[int], rows: list[Row]) -> None:
        # Every row the combinations there take is blamed: the withholding gives back the ones not needed.
        self._covered.add(columns)
        self.found.append(FewLeak(columns, frozenset(i for row in rows for i in row.weights)))
