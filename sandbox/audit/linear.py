"""Which combinations of released cells the auditor must look at: exact linear algebra over a prime field.

Each released SUM or COUNT cell is the total of a set of blocks (``sandbox.audit.blocks``), so a caller who
holds the released cells can compute exactly the totals in their row space: every combination
``y^T R``. The auditor needs the combinations that live on blocks which fail the cell rules alone (the
*unsafe* blocks): with the safe blocks ordered first, the echelon rows whose pivot is unsafe have no safe
column at all, and they span exactly the row space's vectors supported on unsafe blocks (Chin and
Ozsoyoglu's Audit Expert keeps the same echelon form of the released queries). Those vectors' supports are
what the auditor then judges (:func:`supports`): a vector is derivable, and its support is the set of
blocks whose total it is a combination of.

Arithmetic is modulo the prime 2^61 - 1: the cells' coefficients are 0 and 1, and a combination that is
zero modulo a prime this large but not over the rationals needs about 2^61 / rank coincidences; a wrong
"zero" would only make a derivable vector look dependent on one more row, never hide a derivable one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

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
        row = Row({c: v % PRIME for c, v in row.vector.items() if v % PRIME}, dict(row.weights))
        rank_of = self.rank_of
        while row.vector:
            lead = min(row.vector, key=rank_of.__getitem__)
            basis = self.pivots.get(lead)
            if basis is None:
                self.pivots[lead] = row
                return row
            _subtract(row, row.vector[lead] * pow(basis.vector[lead], PRIME - 2, PRIME) % PRIME, basis)
        return None


def unsafe_space(vectors: list[Vector], unsafe: set[int], columns: list[int]) -> list[Row]:
    """A basis of the combinations of ``vectors`` that are zero on every column outside ``unsafe``, each with the
    weights of the vectors it combines. ``columns`` are all the columns the vectors use; safe ones are
    eliminated first."""
    order = sorted(columns, key=lambda c: (c in unsafe, c))
    echelon = Echelon({c: i for i, c in enumerate(order)})
    for index, vector in enumerate(vectors):
        echelon.add(Row(vector, {index: 1}))
    return [row for pivot, row in echelon.pivots.items() if pivot in unsafe]


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
    """A part of the space too large to list its minimal supports: the auditor treats it as a leak."""


# A part of the space with more rows or columns than this is not enumerated (its supports are judged a leak):
# the count of zero sets tried is C(columns, rows - 1).
MOST_PART_ROWS = 4
MOST_PART_COLUMNS = 48


def supports(basis: list[Row]) -> list[Row]:
    """Vectors of the space ``basis`` spans whose supports include every minimal one (every support is a union
    of minimal ones), with the weights that make them. Raises :class:`TooComplex` for a part larger than
    ``MOST_PART_ROWS`` x ``MOST_PART_COLUMNS``."""
    rows = reduced(basis)
    found: list[Row] = []
    for part in _parts(rows):
        if len(part) == 1:
            found.append(part[0])
            continue
        columns = sorted({c for row in part for c in row.vector})
        if len(part) > MOST_PART_ROWS or len(columns) > MOST_PART_COLUMNS:
            raise TooComplex(f"{len(part)} combinations over {len(columns)} blocks")
        found.extend(_minimal_supports(part, columns))
    return found


def _parts(rows: list[Row]) -> list[list[Row]]:
    """The rows grouped so that rows of different groups share no column (union-find on columns)."""
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


def _minimal_supports(part: list[Row], columns: list[int]) -> list[Row]:
    """Every vector of ``part``'s span that is zero on some ``len(part) - 1`` columns and unique up to scale
    there: their supports include every minimal support (a circuit is fixed by its zeros)."""
    dimension = len(part)
    found: dict[frozenset[int], Row] = {}
    for zeros in itertools.combinations(columns, dimension - 1):
        combination = _null_combination([[row.vector.get(c, 0) for c in zeros] for row in part])
        if combination is None:
            continue
        total = Row({}, {})
        for weight, row in zip(combination, part, strict=True):
            if weight:
                _subtract(total, -weight % PRIME, row)
        support = frozenset(total.vector)
        if support and support not in found:
            found[support] = total
    return [found[s] for s in sorted(found, key=sorted)]


def _null_combination(matrix: list[list[int]]) -> list[int] | None:
    """The weights y, unique up to scale, with y^T matrix = 0 (one weight per row); None unless the null space
    of the rows is exactly one-dimensional."""
    rows, cols = len(matrix), len(matrix[0]) if matrix else 0
    # Solve over the transpose: columns of the matrix are equations in the row weights.
    equations = [[matrix[r][c] % PRIME for r in range(rows)] for c in range(cols)]
    pivot_columns: list[int] = []
    line = 0
    for variable in range(rows):
        pivot = next((e for e in range(line, len(equations)) if equations[e][variable]), None)
        if pivot is None:
            continue
        equations[line], equations[pivot] = equations[pivot], equations[line]
        inverse = pow(equations[line][variable], PRIME - 2, PRIME)
        equations[line] = [v * inverse % PRIME for v in equations[line]]
        for e in range(len(equations)):
            if e != line and equations[e][variable]:
                factor = equations[e][variable]
                equations[e] = [(a - factor * b) % PRIME for a, b in zip(equations[e], equations[line], strict=True)]
        pivot_columns.append(variable)
        line += 1
    free = [v for v in range(rows) if v not in pivot_columns]
    if len(free) != 1:
        return None
    weights = [0] * rows
    weights[free[0]] = 1
    for index, variable in enumerate(pivot_columns):
        weights[variable] = -equations[index][free[0]] % PRIME
    return weights
