"""Which combinations of released cells the auditor must look at: exact linear algebra over a prime field.

Each released SUM or COUNT cell is the total of a set of blocks (``sandbox.audit.blocks``), so a caller who
holds the released cells can compute exactly the totals in their row space: every combination
``y^T R``. The auditor needs the combinations that live on blocks which fail the cell rules alone (the
*unsafe* blocks): with the safe blocks ordered first, the echelon rows whose pivot is unsafe have no safe
column at all, and they span exactly the row space's vectors supported on unsafe blocks (Chin and
Ozsoyoglu's Audit Expert keeps the same echelon form of the released queries). Among them the auditor
judges the *totals* (:func:`totals`): vectors that are 1 on each block they take, the derivable total of a
set of blocks.

Arithmetic is modulo the prime 2^61 - 1: the cells' coefficients are 0 and 1, and a combination that is
zero modulo a prime this large but not over the rationals needs about 2^61 / rank coincidences; a wrong
"zero" would only make a derivable vector look dependent on one more row, never hide a derivable one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

PRIME = (1 << 61) - 1

Vector = dict[int, int]  # column -> nonzero coefficient modulo PRIME


@dataclass
class Row:
    """A combination of the released rows: its vector over the blocks, and which rows it combines (row index ->
    weight), so that a leak can be traced to the cells that make it."""

    vector: Vector
    weights: Vector


def _subtract(into: Row, factor: int, row: Row) -> None:
    """``into -= factor * row``, in place."""
    for target, source in ((into.vector, row.vector), (into.weights, row.weights)):
        for column, value in source.items():
            updated = (target.get(column, 0) - factor * value) % PRIME
            if updated:
                target[column] = updated
            else:
                target.pop(column, None)


@dataclass
class Echelon:
    """Rows in echelon form for a fixed order of the columns: each row's first column in that order (its pivot)
    is no other row's. Rows are added one at a time (incremental, like the released answers)."""

    rank_of: dict[int, int]  # column -> its place in the order (smaller first)
    pivots: dict[int, Row] = field(default_factory=dict)  # pivot column -> row

    def add(self, row: Row) -> Row | None:
        """Reduce ``row`` by the rows held; keep and return what is left if it is new, else None."""
        left = self.reduce(row)
        if not left.vector:
            return None
        self.pivots[min(left.vector, key=self.rank_of.__getitem__)] = left
        return left

    def reduce(self, row: Row) -> Row:
        """``row`` less the combination of the rows held that clears every pivot it meets: an empty vector
        means ``row`` is in their span, and its weights then say how (``row`` minus those weights is zero)."""
        row = Row({c: v % PRIME for c, v in row.vector.items() if v % PRIME}, dict(row.weights))
        rank_of = self.rank_of
        while row.vector:
            lead = min(row.vector, key=rank_of.__getitem__)
            basis = self.pivots.get(lead)
            if basis is None:
                return row
            _subtract(row, row.vector[lead] * pow(basis.vector[lead], PRIME - 2, PRIME) % PRIME, basis)
        return row


def unsafe_space(vectors: list[Vector], unsafe: set[int], columns: list[int], *, first: range = range(0)) -> list[Row]:
    """A basis of the combinations of ``vectors`` that are zero on every column outside ``unsafe``, each with the
    weights of the vectors it combines. ``columns`` are all the columns the vectors use; safe ones are
    eliminated first. The vectors ``first`` are added before the others, so that a combination either could make
    is made of them."""
    order = sorted(columns, key=lambda c: (c in unsafe, c))
    echelon = Echelon({c: i for i, c in enumerate(order)})
    for index in [*first, *(i for i in range(len(vectors)) if i not in first)]:
        echelon.add(Row(vectors[index], {index: 1}))
    return [row for pivot, row in echelon.pivots.items() if pivot in unsafe]


def supported_on(rows: list[Row], allowed: frozenset[int] | set[int], columns: list[int],
                 after: frozenset[int] | set[int] = frozenset()) -> list[Row]:
    """Rows spanning the combinations of ``rows`` that are zero outside ``allowed`` and ``after``, less those on
    ``after`` alone: with ``columns`` ordered as the others, then ``allowed``, then ``after``, the echelon rows
    whose pivot is in ``allowed`` (their weights still name the rows they combine)."""
    order = sorted(columns, key=lambda c: (2 if c in after else 1 if c in allowed else 0, c))
    echelon = Echelon({c: i for i, c in enumerate(order)})
    for row in rows:
        echelon.add(Row(dict(row.vector), dict(row.weights)))
    return [row for pivot, row in echelon.pivots.items() if pivot in allowed]


def reduced(basis: list[Row]) -> list[Row]:
    """The reduced echelon form of ``basis`` (each pivot zero in every other row): its rows have supports as
    small as one basis can give, and rows that share no column are independent parts of the space."""
    columns = sorted({c for row in basis for c in row.vector})
    echelon = Echelon({c: i for i, c in enumerate(columns)})
    for row in basis:
        echelon.add(row)
    pivots = echelon.pivots
    for lead in sorted(pivots, key=echelon.rank_of.__getitem__, reverse=True):
        row = pivots[lead]
        inverse = pow(row.vector[lead], PRIME - 2, PRIME)
        for target in (row.vector, row.weights):
            for column in list(target):
                target[column] = target[column] * inverse % PRIME
        for other_lead, other in pivots.items():
            if other_lead != lead and lead in other.vector:
                _subtract(other, other.vector[lead], row)
    return list(pivots.values())


class TooComplex(Exception):
    """A part of the space too large to search for its totals: the auditor treats it as a leak."""


# The most linear-programme work one audit spends on the dominance rule, in taxpayer-programmes (a programme
# over n taxpayers counts n): about 2 s on the shared 2-core machine at 20 us per taxpayer-programme. Past it,
# what is left to search counts as too complex (withheld, never released unsearched).
MOST_PROGRAMME_WORK = 100_000


class AuditCheck:
    """One audit's check, called between steps (its deadline: past it the query is stopped), and the budget of
    linear-programme work that every dominance search of the audit shares: without a shared budget, an answer
    of many cells searched anew for each cell it withholds ran each search to its own limit (a product's street
    x month table: 2,496 programmes of 2,286 taxpayers, two minutes)."""

    def __init__(self, deadline_check: Callable[[], None], most_work: int = MOST_PROGRAMME_WORK) -> None:
        self._deadline_check = deadline_check
        self.most_work = most_work
        self.spent: dict[str, int] = {}  # per search's pool

    def __call__(self) -> None:
        self._deadline_check()

    @property
    def work(self) -> int:
        """The work spent of the first pool (the search over failing blocks)."""
        return self.spent.get("", 0)

    def spend(self, work: int, pool: str = "") -> None:
        """Count ``work`` taxpayer-programmes of the search ``pool`` (each search of its own: the search over
        totals that take passing blocks is not starved by the one over failing blocks); raises
        :class:`TooComplex` past the audit's budget."""
        self.spent[pool] = spent = self.spent.get(pool, 0) + work
        if spent > self.most_work:
            raise TooComplex(f"more than {self.most_work:,} taxpayer-programmes to test the dominance rule")


# The most search steps spent on one part of the space; past it the part is judged a leak.
MOST_SEARCH_STEPS = 200_000


def totals(basis: list[Row], *, steps: int = MOST_SEARCH_STEPS, signed: bool = False) -> list[Row]:
    """Every vector of the space ``basis`` spans that is a *total*: 1 on each block of its support (any
    multiple of a total is found as the total itself), with the weights that make it. With ``signed``, also
    every *difference*: 1 on some blocks and -1 on others (each found once, its first pivot at 1).

    In the reduced echelon form a vector of the space is fixed by its values at the pivots, and a total's are 0
    or 1 (a difference's 0, 1 or -1): so they are among the sums of subsets of the reduced rows (with signs),
    searched part by part (rows that share no column combine independently), depth first, cutting a branch as
    soon as a column no later row touches holds another value. Raises :class:`TooComplex` past ``steps``."""
    found: list[Row] = []
    budget = [steps]
    for part in split(reduced(basis)):
        found.extend(_totals_of(part, budget, signed))
    return found


def _totals_of(part: list[Row], budget: list[int], signed: bool) -> list[Row]:
    last_use: dict[int, int] = {}
    for index, row in enumerate(part):
        for column in row.vector:
            last_use[column] = index
    closing: list[list[int]] = [[] for _ in part]  # per row: the columns no later row touches
    for column, index in last_use.items():
        closing[index].append(column)
    allowed = (0, 1, PRIME - 1) if signed else (0, 1)
    found: list[Row] = []
    total = Row({}, {})

    def search(index: int, started: bool) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise TooComplex(f"more than {MOST_SEARCH_STEPS} steps over {len(part)} combinations")
        if index == len(part):
            if total.vector and all(v in allowed[1:] for v in total.vector.values()):
                found.append(Row(dict(total.vector), dict(total.weights)))
            return
        row = part[index]
        # Each row is left out, added, or (signed, once a row was added) taken away.
        for factor in ((0, PRIME - 1, 1) if signed and started else (0, PRIME - 1)):
            if factor:
                _subtract(total, factor, row)
            if all(total.vector.get(c, 0) in allowed for c in closing[index]):
                search(index + 1, started or bool(factor))
            if factor:
                _subtract(total, PRIME - factor, row)

    search(0, False)
    return found


def split(rows: list[Row]) -> list[list[Row]]:
    """The rows grouped so that rows of different groups share no column (union-find on columns): of a reduced
    echelon form, the independent parts of its space."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for index, row in enumerate(rows):
        for column in row.vector:
            if column in owner:
                parent[find(index)] = find(owner[column])
            else:
                owner[column] = index
    groups: dict[int, list[Row]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(find(index), []).append(row)
    return list(groups.values())
