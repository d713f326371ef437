"""The search for combinations of released cells over fewer than k taxpayers (``sandbox.audit.few``).

Each case gives columns (blocks, with the taxpayers who contribute to each) and released rows (the columns each
cell adds up); the search must find a combination supported on columns of fewer than k taxpayers in all exactly
when one exists that the rows released before did not give. An exhaustive checker that shares no code with the
auditor (exact fractions, every set of columns) decides the random cases.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from sandbox.audit.few import few_taxpayer_leaks
from sandbox.audit.linear import Row, TooComplex

K = 5


def _rows(cells: list[set[int]]) -> list[Row]:
    return [Row({column: 1 for column in cell}, {index: 1}) for index, cell in enumerate(cells)]


def _leaks(people: dict[int, set[str]], cells: list[set[int]], old: int = 0, most_tests: int = 2_000):
    """The leaks the answer (cells ``old`` onward) adds to the cells before it."""
    rows = _rows(cells)
    return few_taxpayer_leaks(rows, lambda: rows[:old], people, K, lambda: None, most_tests=most_tests)


def _firms(prefix: str, n: int) -> set[str]:
    return {f"{prefix}{i}" for i in range(n)}


# --- fixed cases: what is a leak and what is not ------------------------------------------------------------------

def _space_leaks(people: dict[int, set[str]], space: list[dict[int, int]]):
    """The leaks in a space given by its rows (as the auditor passes it: the combinations zero on passing
    blocks), with nothing released before."""
    rows = [Row(dict(vector), {index: 1}) for index, vector in enumerate(space)]
    return few_taxpayer_leaks(rows, list, people, K, lambda: None)


def test_one_small_cell_less_another_of_other_taxpayers_is_a_leak():
    """S1 - S2 (two firms each, four in all), as P u S1 less P u S2 gives it: any of the four, with two others,
    learns the fourth's figure; the threshold rule withholds a cell of four for that very reason."""
    people = {0: _firms("s1-", 2), 1: _firms("s2-", 2)}
    leaks = _space_leaks(people, [{0: 1, 1: -1}])
    assert [set(leak.columns) for leak in leaks] == [{0, 1}]


def test_a_remainder_of_many_small_cells_is_no_leak():
    """A street's suppressed industries (each 2 firms, 6 in all with k = 5) as one remainder: the remainder is
    of 6 taxpayers; no combination of fewer than 5 follows."""
    people = {0: _firms("a", 2), 1: _firms("b", 2), 2: _firms("c", 2)}
    assert _space_leaks(people, [{0: 1, 1: 1, 2: 1}]) == []


def test_a_small_difference_inside_a_large_part_is_found():
    """The space spans six blocks of 2 taxpayers (12 in all) in one part: S1 - S2 (4 taxpayers) lies inside it,
    beside S2 + S3 + S4 - S5 - S6, and must be found by narrowing the part."""
    people = {i: _firms(f"s{i}-", 2) for i in range(6)}
    leaks = _space_leaks(people, [{0: 1, 1: -1}, {1: 1, 2: 1, 3: 1, 4: -1, 5: -1}])
    assert [set(leak.columns) for leak in leaks] == [{0, 1}], leaks
    assert leaks[0].rows == {0}, "the row that makes it is blamed"


def test_a_combination_of_one_firms_blocks_beside_others_is_found():
    """LONE trades alone in two blocks and beside 9 others in a third: 2 x (its first block) + its second is a
    function of LONE alone, though the part (with the third block) holds 10."""
    people = {0: {"LONE"}, 1: {"LONE"}, 2: {"LONE"} | _firms("x", 9)}
    leaks = _space_leaks(people, [{0: 2, 1: 1}, {1: 1, 2: 1}])
    assert [set(leak.columns) for leak in leaks] == [{0, 1}], leaks


def test_a_leak_the_cells_before_gave_is_not_the_answers():
    """LONE's block was derivable before (a ledger written before the auditor); an answer about other blocks
    adds nothing there and is not blamed for it."""
    people = {0: {"LONE"}, 1: _firms("x", 3), 2: _firms("y", 3)}
    assert _leaks(people, [{0}, {1, 2}], old=1) == []
    assert _leaks(people, [{0}, {1}], old=1), "the answer's own cell of three taxpayers is a leak"


def test_blocks_that_add_nothing_are_no_cover():
    """A block no one contributes to (dormant firms declaring 0) adds 0: LONE plus it is LONE."""
    people = {0: {"LONE"}, 1: set(), 2: _firms("x", 10)}
    leaks = _leaks(people, [{0, 1}])
    assert leaks and leaks[0].columns == {0}


def test_the_search_stops_past_its_budget():
    """A chain of single-firm blocks, each cell two neighbours: past its rank tests the search gives up (and
    the auditor then compares dimensions)."""
    people = {i: {f"F{i}"} for i in range(40)}
    cells = [{i, i + 1} for i in range(39)]
    with pytest.raises(TooComplex):
        _leaks(people, cells, most_tests=3)


# --- random cases against an exhaustive checker -------------------------------------------------------------------

def _rank(rows: list[list[Fraction]]) -> int:
    """Rank by Gaussian elimination over the rationals."""
    rows = [list(r) for r in rows]
    rank, width = 0, len(rows[0]) if rows else 0
    for column in range(width):
        pivot = next((i for i in range(rank, len(rows)) if rows[i][column]), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for i in range(len(rows)):
            if i != rank and rows[i][column]:
                factor = rows[i][column] / rows[rank][column]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[rank], strict=True)]
        rank += 1
    return rank


def _dimension_on(cells: list[set[int]], columns: list[int], support: set[int]) -> int:
    """How many independent combinations of ``cells`` are zero outside ``support``: rows less the rank of the
    cells restricted to the other columns."""
    if not cells:
        return 0
    outside = [c for c in columns if c not in support]
    restricted = [[Fraction(int(c in cell)) for c in outside] for cell in cells]
    return len(cells) - (_rank(restricted) if outside else 0)


def _new_leak_exists(people: dict[int, set[str]], cells: list[set[int]], old: int) -> bool:
    columns = sorted(people)
    empty = {c for c in columns if not people[c]}
    others = [c for c in columns if c not in empty]
    for size in range(1, len(others) + 1):
        for chosen in itertools.combinations(others, size):
            if len(set().union(*(people[c] for c in chosen))) >= K:
                continue
            support = set(chosen) | empty
            new = _dimension_on(cells, columns, support) - _dimension_on(cells, columns, empty)
            before = _dimension_on(cells[:old], columns, support) - _dimension_on(cells[:old], columns, empty)
            if new > before:
                return True
    return False


@pytest.mark.parametrize("seed", range(300))
def test_the_search_finds_a_new_leak_exactly_when_one_exists(seed):
    generator = random.Random(seed)
    pool = [f"T{i}" for i in range(generator.randint(4, 14))]
    people = {c: set(generator.sample(pool, generator.randint(0, 3))) for c in range(generator.randint(3, 8))}
    columns = sorted(people)
    cells = [set(generator.sample(columns, generator.randint(1, len(columns))))
             for _ in range(generator.randint(1, 6))]
    old = generator.randint(0, len(cells) - 1)
    expected = _new_leak_exists(people, cells, old)
    found = _leaks(people, cells, old=old)
    assert bool(found) == expected, (people, cells, old, found)
    for leak in found:
        assert len(set().union(*(people[c] for c in leak.columns))) < K
        assert any(index >= old for index in leak.rows), "a new leak is blamed on the answer's rows"
