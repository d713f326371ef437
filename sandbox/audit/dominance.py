"""Combinations of released cells that the dominance rule would withhold: one or two taxpayers' figures to within
a small margin.

A combination ``v`` of released cells (any weights: a total, a difference, a giant's year less its year before,
a giant's block less a small block of others) is the sum over taxpayers of their *net* amounts ``n_e(v)`` (each
taxpayer's amounts in the blocks, weighted). The dominance rule on it is the cell rule on those nets, by
magnitude: under (n, k) the n largest ``|n_e|`` must not exceed k% of ``sum |n_e|``; under p% what is left after
the two largest must not be under p% of the largest.

Write ``a_e`` for taxpayer e's nets as a linear function of the combination's coordinates ``z`` in a basis of the
space (so ``n_e = a_e . z``), and ``Z`` for the zonotope ``{sum_e w_e a_e : |w_e| <= 1}``, whose support function
is ``h(z) = sum_e |a_e . z|``, the combination's total magnitude. Then a set S of taxpayers with signs s is
dominant in some combination exactly when a point ``q`` built from their ``a_e`` lies outside Z, since
``max_z q . z / h(z)`` is the gauge of q in Z:

- (n, k): ``q = (100 / k) * sum_{e in S} s_e a_e`` with |S| = n;
- p%: ``q = (1 + p / 100) s_1 a_1 + s_2 a_2`` (what is left after e_1 and e_2 is ``h - |n_1| - |n_2|``).

The gauge of q is a linear programme (HiGHS, through scipy): maximise ``q . z`` subject to ``sum_e |a_e . z| <= 1``.
Each taxpayer's own gauge ``g_e`` bounds the sets worth testing: the gauge is a norm, so the gauge of q is at most
the weighted sum of its members' gauges, and only sets whose weighted gauges add up past 1 are tested; a
least-norm certificate bounds every ``g_e`` before any programme runs, and taxpayers are tried largest bound
first, so the search stops where the bounds left cannot add up past 1. Under (n, k) smaller sets are tried
first (a taxpayer dominant alone is dominant with anyone), and the search stops at the first set found: the
auditor withholds a cell it takes and asks again. The arithmetic is floating point with a margin toward leaks (a
gauge within 1e-6 of 1 counts as outside).

The space is given as echelon rows over the prime field of :mod:`sandbox.audit.linear`; its reduced form is
brought back to rationals (their entries are small ratios for cells that add up blocks) before the programme.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack, identity, vstack

from dsbroker.policy.model import Dominance
from sandbox.audit.linear import PRIME, AuditCheck, Row, TooComplex, reduced
from sandbox.audit.programmes import Programme

# A gauge this close to 1 counts as outside: floating point must err toward withholding.
MARGIN = 1e-6
# How much higher a gauge must be with the answer than without it for the set to be the answer's: well past the
# programmes' rounding (the same combination solved in two bases), far below any change an answer makes.
NEWER = 1e-4
# The most programmes one search solves before the space counts as too complex to search.
MOST_PROGRAMMES = 2_000
# The most partners tried for one taxpayer of a set before the space counts as too complex.
MOST_PARTNERS = 200


@dataclass(frozen=True)
class DominanceLeak:
    """A set of taxpayers dominant in some combination, with the released rows that combination takes."""

    taxpayers: tuple
    rows: frozenset[int]


def first_dominated(basis: list[Row], before: Callable[[], list[Row]], amounts: dict[int, dict[Hashable, Any]],
                    rule: Dominance, check: Callable[[], None]) -> DominanceLeak | None:
    """A set of taxpayers dominant in some combination of the span of ``basis`` (with its columns' amounts per
    taxpayer in ``amounts``) and in none of the span of ``before()`` (the space without the answer, built only
    when a set is found); None if there is none. Raises :class:`TooComplex` where the space cannot be searched."""
    found = first_new_dominant(_Nets.of, basis, before, amounts, rule, check)
    if found is None:
        return None
    space, weights, rows = found
    return DominanceLeak(tuple(space.entities[e] for e in weights), rows)


def first_new_dominant(make: Callable[..., Any], basis: list[Row], before: Callable[[], list[Row]],
                       amounts: dict[int, dict[Hashable, Any]], rule: Dominance, check: Callable[[], None]
                       ) -> tuple[Any, dict[int, float], frozenset[int]] | None:
    """The first set :class:`SetSearch` finds dominant in the space ``make(basis, amounts)`` that the space of
    ``before()`` (made with the same taxpayers, only when a set is found) shows less dominant: the space, the set's
    signed weights by taxpayer position and the rows of the combination that shows it; None if there is none."""
    space = make(basis, amounts)
    if space is None:
        return None
    old: list[Any] = []

    def new_here(weights: dict[int, float], gauge: float) -> bool:
        """Whether the answer shows the set more dominant than the cells before did (the gauge in the space
        before is at most the gauge now: new where it is lower)."""
        if not old:
            old.append(make(before(), amounts, entities=space.entities))
        previous = old[0]
        if previous is None:
            return True
        return previous.gauge(previous.point(weights))[0] < gauge * (1 - NEWER)

    for weights, rows in SetSearch(space, check).dominant(rule, new_here):
        return space, weights, rows
    return None


def _shapes(rule: Dominance, entities: int) -> list[tuple[tuple[float, ...], bool]]:
    """The weighted sets the rule tests, in order: each member's weight, and whether the members' roles are the
    same (a set, not a sequence)."""
    shapes = []
    if rule.n is not None and rule.k is not None:
        scale = 100 / rule.k
        shapes.extend(((scale,) * size, True) for size in range(1, min(rule.n, entities) + 1))
    if rule.p is not None:
        first = 1 + rule.p / 100
        shapes.append(((first, 1.0) if entities > 1 else (first,), False))
    return shapes


class SetSearch:
    """Sets of taxpayers whose weighted gauges add up past 1, taxpayers tried by their gauges' bounds, largest
    first, with exact gauges (one programme each) computed only where a bound does not settle it.

    The space gives ``entities``, ``gauge_bounds()``, ``point(weights)``, ``gauge(point)``, ``rows_of(z)``, the
    ``work`` one programme counts against the audit's budget, whether it is ``symmetric`` (a set's gauge is the
    same with its signs turned: the later members' signs are then tried both ways), and ``shared(weights)``: None,
    or a key, a factor and a point whose gauge times the factor is the set's (sets with the same key share one
    programme). A space may also bound every taxpayer in the roles left beside a set by one point (``tail_point``:
    one programme rules them all out), and say which taxpayers may fill a set's last role at all
    (``partner_candidates``, with ``partner_group``, ``candidate_tail_point`` and ``largest_among``: the candidates
    are then bounded group by group, :meth:`_bounded_candidates`), how much a set's gauge bounds it without a
    programme (``set_bound``), and what a partner may add to a set's gauge by its programme's duals
    (``dual_partner_bounds``, after ``gauge`` left ``last_block_duals``)."""

    def __init__(self, space: _Nets, check: Callable[[], None]) -> None:
        self.space, self.check = space, check
        self.bounds = space.gauge_bounds()
        self.order = [int(e) for e in np.argsort(-self.bounds, kind="stable") if self.bounds[e] > MARGIN]
        self.exact: dict[int, tuple[float, np.ndarray]] = {}
        self.programmes = 0
        self.programmes_shared: dict[Hashable, tuple[float, np.ndarray]] = {}
        self.dominant_sets: list[set[int]] = []
        self.rank = {e: place for place, e in enumerate(self.order)}
        self.set_bound = getattr(space, "set_bound", None)
        # The block duals of each exact programme, where the space gives them (dual_partner_bounds).
        self.last_duals: np.ndarray | None = None
        self.shared_duals: dict[Hashable, np.ndarray | None] = {}
        self.exact_duals: dict[int, np.ndarray | None] = {}
        self.dual_bounds: dict[Hashable, np.ndarray] = {}
        self.candidates: dict[Hashable, list[int]] = {}

    def dominant(self, rule: Dominance, accept: Callable[[dict[int, float], float], bool]
                 ) -> Iterator[tuple[dict[int, float], frozenset[int]]]:
        """Yield each weighted set found dominant that ``accept`` (told its signed weights, by taxpayer position,
        and its gauge) takes, with the rows of the combination that shows it; sets that hold one yielded before are
        skipped (they are dominant with it), and not solved."""
        found = self.dominant_sets
        for weights, unordered in _shapes(rule, len(self.order)):
            for members in self.members(weights, unordered, [], 0.0):
                if any(earlier <= set(members) for earlier in found):
                    continue
                turns = (1.0, -1.0) if self.space.symmetric else (1.0,)
                for signs in itertools.product(turns, repeat=len(members) - 1):
                    signed = {members[0]: weights[0]} | {
                        e: w * sign for e, w, sign in zip(members[1:], weights[1:], signs, strict=True)}
                    if len(members) == 1:
                        gauge, z = self.exact[members[0]]
                        gauge *= weights[0]
                    elif self.set_bound is not None and self.set_bound(signed) <= 1 - MARGIN:
                        continue  # bounded below 1 as one set, without a programme
                    else:
                        gauge, z = self.solve(signed)
                    if gauge > 1 - MARGIN and accept(signed, gauge):
                        # A set holding it is dominant with it, and is not searched. One dominant before but not
                        # taken does not shield the sets holding it: a new partner may be what they give away.
                        found.append(set(members))
                        yield signed, self.space.rows_of(z)
                        break

    def solve(self, weights: dict[int, float]) -> tuple[float, np.ndarray]:
        """The gauge of the point the signed weights make, with the combination that attains it."""
        shared = self.space.shared(weights)
        if shared is None:
            found = self._programme(self.space.point(weights))
            self.last_duals = getattr(self.space, "last_block_duals", None)
            return found
        key, factor, point = shared
        if key not in self.programmes_shared:
            self.programmes_shared[key] = self._programme(point)
            self.shared_duals[key] = getattr(self.space, "last_block_duals", None)
        duals = self.shared_duals.get(key)
        self.last_duals = duals * factor if duals is not None else None
        gauge, z = self.programmes_shared[key]
        return gauge * factor, z

    def _programme(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        self.programmes += 1
        if self.programmes > MOST_PROGRAMMES:
            raise TooComplex(f"more than {MOST_PROGRAMMES} programmes to test the dominance rule")
        self.check()
        if isinstance(self.check, AuditCheck):  # the audit's budget, shared by all its searches
            self.check.spend(self.space.work, self.space.pool)
        return self.space.gauge(point)

    def gauge(self, e: int) -> float:
        """Taxpayer e's exact gauge (cached with its combination)."""
        if e not in self.exact:
            self.exact[e] = self.solve({e: 1.0})
            self.exact_duals[e] = self.last_duals
        return self.exact[e][0]

    def members(self, weights: tuple[float, ...], unordered: bool, chosen: list[int],
                total: float) -> Iterator[list[int]]:
        """The sets (sequences where roles differ) extending ``chosen`` whose weighted exact gauges exceed 1."""
        role = len(chosen)
        if role == len(weights):
            if total > 1 - MARGIN:
                yield chosen
            return
        by_blocks = getattr(self.space, "partner_candidates", None) is not None
        if role == len(weights) - 1 and role and by_blocks:
            for f in self._bounded_candidates(chosen, weights, self._candidates(chosen, weights, unordered, total)):
                yield chosen + [f]
            return
        start = self.order.index(chosen[-1]) + 1 if unordered and chosen else 0
        for position in range(start, len(self.order)):
            e = self.order[position]
            if e in chosen or any(earlier <= {*chosen, e} for earlier in self.dominant_sets):
                continue
            # The largest bound the later roles can still take: the next taxpayers' in a set, anyone's else.
            later = (self.order[position + 1] if position + 1 < len(self.order) else None) if unordered else \
                next((f for f in self.order if f not in chosen and f != e), None)
            rest = sum(weights[role + 1:]) * (self.bounds[later] if later is not None else 0.0)
            if total + weights[role] * self.bounds[e] + rest <= 1 - MARGIN:
                if unordered or role == 0:
                    break  # the order is by bound: no later taxpayer takes the sum past 1
                continue
            if by_blocks and role == len(weights) - 2 and not self._candidates(
                    chosen + [e], weights, unordered, total + weights[role] * self.bounds[e]):
                continue  # no partner passes a block's test with it: no programme for it (its bound is no gauge)
            if total + weights[role] * self.gauge(e) + rest > 1 - MARGIN and self._tail_may_dominate(chosen + [e],
                                                                                                    weights):
                yield from self.members(weights, unordered, chosen + [e], total + weights[role] * self.gauge(e))

    def _candidates(self, chosen: list[int], weights: tuple[float, ...], unordered: bool, total: float) -> list[int]:
        """The partners that may fill the last role beside ``chosen`` (whose weighted gauges, or bounds of them, add
        up to ``total``), where the space can say which taxpayers pass a block's test with them
        (``partner_candidates``): those whose bound may take the set past 1, largest bound first, and, in a set
        whose roles are the same, only those after ``chosen``'s last in the order (the sets with an earlier one
        were tried from it). The test per block is asked once per ``chosen``."""
        key = ("partners", tuple(chosen), weights)
        if key not in self.candidates:
            self.candidates[key] = self.space.partner_candidates(dict(zip(chosen, weights, strict=False)),
                                                                 weights[len(chosen)])
        last = self.rank.get(chosen[-1], len(self.rank)) if unordered else -1
        weight = weights[len(chosen)]
        found = [f for f in self.candidates[key]
                 if f not in chosen and self.rank.get(f, len(self.rank) + 1) > last
                 and total + weight * self.bounds[f] > 1 - MARGIN
                 and not any(earlier <= {*chosen, f} for earlier in self.dominant_sets)]
        added = self._dual_bounds(chosen, weights)
        if added is not None and all(e in self.exact for e in chosen):
            exact = sum(w * self.exact[e][0] for e, w in zip(chosen, weights, strict=False))
            found = [f for f in found if exact + added[f] > 1 - MARGIN]
        return sorted(found, key=lambda f: -self.bounds[f])

    def _dual_bounds(self, chosen: list[int], weights: tuple[float, ...]) -> np.ndarray | None:
        """Per taxpayer, a bound of what it adds in the last role to the gauge of ``chosen`` (each with its exact
        programme's block duals, weighted: a sum of dual solutions is one of the sum of their points), where the
        space gives them (``dual_partner_bounds``); None otherwise."""
        if getattr(self.space, "dual_partner_bounds", None) is None:
            return None
        duals = [self.exact_duals.get(e) for e in chosen]
        if any(d is None for d in duals):
            return None
        key = ("duals", tuple(chosen), weights)
        if key not in self.dual_bounds:
            combined = sum(w * d for w, d in zip(weights, duals, strict=False))
            self.dual_bounds[key] = self.space.dual_partner_bounds(combined, weights[len(chosen)])
        return self.dual_bounds[key]

    def _bounded_candidates(self, chosen: list[int], weights: tuple[float, ...], found: list[int]) -> Iterator[int]:
        """The candidates ``found`` for the last role beside ``chosen``, one at a time, in groups the space bounds
        together (``partner_group``): while one programme bounding every candidate left in a group
        (``candidate_tail_point``) says some may still make the set dominant, the one with the largest net in that
        programme's combination is tried next and then left out. Where two are left, both are tried (a programme
        each, as many as the bound would cost). Past ``MOST_PARTNERS`` tried for one set the space is too complex."""
        weight = weights[len(chosen)]
        members = dict(zip(chosen, weights, strict=False))
        groups: dict[Hashable, list[int]] = {}
        for f in found:
            groups.setdefault(self.space.partner_group(f), []).append(f)
        tried = 0
        for _, left in sorted(groups.items(), key=lambda item: repr(item[0])):
            while left:
                if len(left) <= 2:
                    yield from left
                    break
                gauge, z = self._programme(self.space.candidate_tail_point(members, weight, left))
                if gauge <= 1 - MARGIN:
                    break
                partner = self.space.largest_among(z, left)
                if partner is None:  # the bound's combination names none of them: each is tried
                    yield from left
                    break
                tried += 1
                if tried > MOST_PARTNERS:
                    raise TooComplex(f"more than {MOST_PARTNERS} partners to test for one set of the dominance rule")
                left.remove(partner)
                yield partner

    def _tail(self, chosen: list[int], weights: tuple[float, ...]) -> tuple[float, np.ndarray] | None:
        """The gauge (and combination) of the space's bound on every set of ``chosen`` with any taxpayers in the
        roles left, solved once per ``chosen``; None where the space has no such bound."""
        key = ("tail", tuple(chosen), weights)
        if key not in self.programmes_shared:
            point = self.space.tail_point(dict(zip(chosen, weights, strict=False)), weights[len(chosen):])
            if point is None:
                return None
            self.programmes_shared[key] = self._programme(point)
        return self.programmes_shared[key]

    def _tail_may_dominate(self, chosen: list[int], weights: tuple[float, ...]) -> bool:
        """Whether ``chosen`` with any taxpayers in the roles left may be dominant: where the space can bound every
        such set by one point (``tail_point``), one programme says so for all of them; where one role is left and
        the space names the candidates for it, they are bounded by programmes of their own."""
        if getattr(self.space, "tail_point", None) is None or len(chosen) in (0, len(weights)):
            return True
        if len(chosen) == len(weights) - 1 and getattr(self.space, "partner_candidates", None) is not None:
            return True  # the partners are the candidates, bounded by a programme of their own
        found = self._tail(chosen, weights)
        return found is None or found[0] > 1 - MARGIN


class _Nets:
    """The taxpayers' nets over a space: one row ``a_e`` per taxpayer, over the space's coordinates."""

    symmetric = True  # the zonotope is: a set with its signs turned is as dominant
    pool = ""  # the audit's budget of programmes this search spends: the first one

    def shared(self, weights: dict[int, float]) -> None:
        """Every set's gauge is a programme of its own."""
        return None

    def __init__(self, entities: list[Hashable], matrix: np.ndarray, weights: list[dict[int, int]]) -> None:
        self.entities = entities
        self.matrix = matrix  # taxpayers x coordinates
        self.weights = weights  # per coordinate, the released rows it combines (mod PRIME)
        self._programmes: dict[int, Programme] = {}  # by the power of two the point is scaled with
        # Against the audit's budget of taxpayer-programmes (20 us each, about 2 s in all): a fresh linprog took 20 us
        # a taxpayer; kept as one model and warm-started, a programme takes about 0.8 us a taxpayer (the demo's
        # street x section table: 2,301 programmes over 2,342 taxpayers in 4.3 s).
        self.work = max(1, len(entities) // 25)

    @classmethod
    def of(cls, basis: list[Row], amounts: dict[int, dict[Hashable, Any]],
           entities: list[Hashable] | None = None) -> _Nets | None:
        """The nets over the span of ``basis``, whose columns' amounts per taxpayer are ``amounts``; None if every
        net is 0. ``entities`` fixes the taxpayers' order (to compare two spaces)."""
        if not basis:
            return None
        rows = reduced([Row(dict(r.vector), dict(r.weights)) for r in basis])
        rational = [{c: float(to_rational(v)) for c, v in row.vector.items()} for row in rows]
        if entities is None:
            entities = sorted({e for row in rational for c in row for e in amounts.get(c, {})}, key=repr)
        index = {e: i for i, e in enumerate(entities)}
        try:
            scale = float(max((abs(a) for column in amounts.values() for a in column.values()), default=0)) or 1.0
            matrix = np.zeros((len(entities), len(rational)))
            for j, row in enumerate(rational):
                for column, coefficient in row.items():
                    for entity, amount in amounts.get(column, {}).items():
                        if entity in index:
                            matrix[index[entity], j] += coefficient * (float(amount) / scale)
        except OverflowError as error:
            raise TooComplex("amounts too large to compare") from error
        if not np.isfinite(matrix).all():
            raise TooComplex("amounts that are not finite")
        if not matrix.any():
            return None
        # Each coordinate scaled to norm 1: gauges do not change with the coordinates, and the programme and the
        # bounds then see no direction of the space as rounding beside another (a firm of 200 yuan beside giants).
        norms = np.linalg.norm(matrix, axis=0)
        matrix = matrix / np.where(norms > 0, norms, 1.0)
        return cls(entities, matrix, [row.weights for row in rows])

    def point(self, weights: dict[int, float]) -> np.ndarray:
        """The point sum of ``weight * a_e`` (taxpayers by position)."""
        point = np.zeros(self.matrix.shape[1])
        for e, weight in weights.items():
            point += weight * self.matrix[e]
        return point

    def gauge_bounds(self) -> np.ndarray:
        """Per taxpayer an upper bound of its gauge: ``a_e = sum_f w_f a_f`` with the least-norm w (the projection
        of e on the span of A's columns) gives ``g_e <= max |w_f|``, and always ``g_e <= 1``. A certificate that
        does not give ``a_e`` back to within rounding is not trusted: its bound is 1."""
        a = self.matrix
        left, sigma, _ = np.linalg.svd(a, full_matrices=False)
        left = left[:, sigma > sigma.max() * 1e-12] if sigma.size else left
        bounds = np.ones(len(self.entities))
        for start in range(0, len(self.entities), 512):
            stop = min(start + 512, len(self.entities))
            certificates = left @ left[start:stop].T  # column f: the least-norm w for a_f
            residual = np.linalg.norm(a.T @ certificates - a[start:stop].T, axis=0)
            exact = residual <= 1e-9 * np.linalg.norm(a[start:stop], axis=1) + 1e-300
            found = np.minimum(1.0, np.abs(certificates).max(axis=0) * (1 + 1e-6) + 1e-9)
            bounds[start:stop] = np.where(exact, found, 1.0)
        return bounds

    def gauge(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        """The gauge of ``point`` in the zonotope (max ``point . z`` subject to ``sum_e |a_e . z| <= 1``), with the
        z that attains it.

        The programme is solved with the point and every ``a_e`` scaled by a power of two that brings the point's
        largest coordinate within a factor 2 of 1 (the gauge does not change when both are): the solver drops
        coefficients under 1e-9, and it must not drop the point's own taxpayers beside a giant 1e9 times larger;
        what it drops then is under 2e-9 of them, which only lowers what the others hold, and so errs toward
        withholding. One model is kept per power (:class:`~sandbox.audit.programmes.Programme`)."""
        entities, dimension = self.matrix.shape
        largest = float(np.abs(point).max())
        if not largest:
            return 0.0, np.zeros(dimension)
        # A power of two near 1 / largest: the point's largest coordinate lands within a factor 2 of 1, and points
        # of like size share one model (its last basis is where the next solve starts).
        exponent = -math.frexp(largest)[1]
        scale = math.ldexp(1.0, exponent)
        programme = self._programmes.get(exponent)
        if programme is None:
            a = csr_matrix(self.matrix * scale)
            eye = identity(entities, format="csr")
            constraints = vstack([hstack([a, -eye]), hstack([-a, -eye]),
                                  hstack([csr_matrix((1, dimension)), csr_matrix(np.ones((1, entities)))])]).tocsr()
            programme = self._programmes[exponent] = Programme(
                constraints, np.concatenate([np.zeros(2 * entities), [1.0]]),
                [None] * dimension + [0.0] * entities, [None] * (dimension + entities))
        status, optimum, x = programme.maximise(np.concatenate([point * scale, np.zeros(entities)]))
        if status != "optimal":
            raise TooComplex(f"the dominance programme did not solve ({status})")
        return optimum, x[:dimension]

    def rows_of(self, z: np.ndarray) -> frozenset[int]:
        """The released rows the combination with coordinates ``z`` takes."""
        scale = float(np.abs(z).max()) or 1.0
        return frozenset(i for j, weights in enumerate(self.weights) if abs(z[j]) > 1e-9 * scale for i in weights)


def to_rational(residue: int) -> Fraction:
    """The fraction a / b with |a|, |b| < sqrt(PRIME / 2) congruent to ``residue`` (rational reconstruction);
    raises :class:`TooComplex` if there is none (the space's entries are then too large to bring back)."""
    bound = int((PRIME // 2) ** 0.5)
    r0, r1, s0, s1 = PRIME, residue % PRIME, 0, 1
    while r1 > bound:
        quotient = r0 // r1
        r0, r1 = r1, r0 - quotient * r1
        s0, s1 = s1, s0 - quotient * s1
    if abs(s1) > bound or s1 == 0:
        raise TooComplex("the space's coefficients are too large to bring back to rationals")
    return Fraction(r1, s1)
