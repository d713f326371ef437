"""Totals of released cells that take a block which passes the rules alone, and that one or two taxpayers dominate.

The dominance search of :mod:`sandbox.audit.dominance` judges every combination, whatever its weights, of the
blocks that fail the cell rules alone. A total may also take a block that passes alone: a street less its other
industries is a giant's industry together with a small one beside it, which the cell rules pass alone (many
firms, none dominant) and which is too small to hide the giant. Such a combination is judged here, for every
combination whose weights are all of one sign (a *total*: each block it takes added, in any multiple). Mixed
signs are not: a street's 2026 total less its 2025 total is the change departments report, released even where
one firm's growth is most of it (README).

For a total, each taxpayer whose amounts over the blocks all have one sign (most: a firm declares revenue, not
refunds) has a net of that sign, so its magnitude is linear in the block weights ``x >= 0``, and the magnitudes of
all such taxpayers add up to ``sum_c x_c P_c``, with ``P_c`` the block's magnitude of them. The gauge of the
(n, k) or p% point of a set of taxpayers (:mod:`sandbox.audit.dominance`) is then a small linear programme over
the space's coordinates, with one constraint per block that holds a nonzero amount (its weight is not negative; a
block that adds 0 may take either sign, as it changes no net), and one variable only for each taxpayer whose
amounts change sign. A set can dominate some total only where it holds more than k% of some
block it takes (the totals' shares are weighted means of the blocks'), so a taxpayer's largest share of a block
bounds its gauge, and only where some block is dominated alone can a total be (unless some taxpayer's amounts
change sign). The same argument for a set (:mod:`sandbox.audit.block_shares`) says which taxpayers may complete a
set at all; the candidates are then bounded as one set with it, by the duals of its programme, and by one
programme per group of them (those of one sign; those whose amounts change sign, by orientation).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack, identity, vstack

from dsbroker.policy.model import Dominance
from sandbox.audit.block_shares import BlockShares
from sandbox.audit.dominance import DominanceLeak, first_new_dominant, to_rational
from sandbox.audit.linear import Row, TooComplex, reduced
from sandbox.audit.programmes import Programme

# The amounts kept per block for the partner bound: enough for the sets of the usual rules ((n, k) with n up to
# 4, p% two) and one more; a grant may write any n, and a block the partners tried use up is read whole.
_LARGEST = 8

Oriented = tuple  # (taxpayer, +1.0 or -1.0): the taxpayer, with the sign its nets take in the totals tried


def first_dominated_total(basis: list[Row], before: Callable[[], list[Row]],
                          amounts: dict[int, dict[Hashable, Any]], rule: Dominance,
                          check: Callable[[], None]) -> DominanceLeak | None:
    """A set of taxpayers dominant in some total (weights of one sign) of the span of ``basis`` (its columns'
    amounts per taxpayer in ``amounts``) and in none of the span of ``before()`` (built only when a set is found);
    None if there is none. Raises :class:`TooComplex` where the space cannot be searched."""
    found = first_new_dominant(_Totals.of, basis, before, amounts, rule, check)
    if found is None:
        return None
    space, weights, rows = found
    return DominanceLeak(tuple(space.entities[e][0] for e in weights), rows)


def _scaled(rows: list[Row], columns: list[int], amounts: dict[int, dict[Hashable, Any]]
            ) -> tuple[dict[Hashable, dict[int, float]], np.ndarray]:
    """Per taxpayer its nonzero amounts by block position, scaled by the largest magnitude, and the blocks' weights
    per coordinate of the reduced rows (rationals brought back from the prime field)."""
    column_at = {c: i for i, c in enumerate(columns)}
    try:
        scale = float(max((abs(a) for c in columns for a in amounts.get(c, {}).values()), default=0)) or 1.0
        by_entity: dict[Hashable, dict[int, float]] = {}
        for c in columns:
            for entity, amount in amounts.get(c, {}).items():
                if amount:
                    by_entity.setdefault(entity, {})[column_at[c]] = float(amount) / scale
        weights_of = np.zeros((len(columns), len(rows)))
        for j, row in enumerate(rows):
            for column, coefficient in row.vector.items():
                weights_of[column_at[column], j] = float(to_rational(coefficient))
    except OverflowError as error:
        raise TooComplex("amounts too large to compare") from error
    return by_entity, weights_of


def _one_sign(values) -> bool:
    values = list(values)
    return all(v > 0 for v in values) or all(v < 0 for v in values)


def amounts_change_sign(amounts: dict[int, dict[Hashable, Any]]) -> bool:
    """Whether some taxpayer's amounts have both signs across the columns (its nets in a total can cancel, so a
    total can be dominated though no block is)."""
    signs: dict[Hashable, int] = {}
    for column in amounts.values():
        for entity, amount in column.items():
            if amount:
                sign = 1 if amount > 0 else -1
                if signs.setdefault(entity, sign) != sign:
                    return True
    return False


class _Totals:
    """The taxpayers' nets over the totals of a space: the coordinates, the blocks' weights as a function of them,
    the blocks' magnitudes of the taxpayers of one sign, and one row per taxpayer whose amounts change sign."""

    symmetric = False  # a set's sign is its members' orientation: the search tries no others
    pool = "totals"  # a budget of its own in the audit's (AuditCheck.spend)

    def __init__(self, entities: list[Oriented], weights_of: np.ndarray, single: np.ndarray,
                 by_entity: dict[Hashable, dict[int, float]], changing: list[Hashable],
                 row_weights: list[dict[int, int]]) -> None:
        self.entities = entities
        self.weights = row_weights  # per coordinate, the released rows it combines (mod PRIME)
        self._amounts = by_entity  # per taxpayer, its amounts by block position (scaled)
        self._single = single  # per block, the magnitude of its taxpayers of one sign
        changed = set(changing)
        self._changes_sign = np.array([entity in changed for entity, _ in entities], dtype=bool)
        # Per block, its largest magnitudes and whose (enough to leave out the members of any set and fill its other
        # roles), as two arrays: blocks x _LARGEST.
        names = sorted(by_entity, key=repr)
        self._name_at = {entity: i for i, entity in enumerate(names)}
        largest: list[list[tuple[float, int]]] = [[] for _ in single]
        for i, entity in enumerate(names):
            for at, value in by_entity[entity].items():
                largest[at].append((abs(value), i))
        # Every block's amounts, largest first, for the blocks whose kept ones the partners tried use up.
        self._ranked = [sorted(values, key=lambda p: -p[0]) for values in largest]
        self._largest_values = np.zeros((len(single), _LARGEST))
        self._largest_names = np.full((len(single), _LARGEST), -1)
        for at, values in enumerate(self._ranked):
            for place, (value, i) in enumerate(values[:_LARGEST]):
                self._largest_values[at, place], self._largest_names[at, place] = value, i
        self._alone_in = {entity: next(iter(parts)) for entity, parts in by_entity.items()
                          if len(parts) == 1 and entity not in changed}
        mixed = np.zeros((len(changing), weights_of.shape[1]))
        for i, entity in enumerate(changing):
            for at, value in by_entity[entity].items():
                mixed[i] += value * weights_of[at]
        # Each coordinate scaled to norm 1 (the gauge does not change), so no direction is rounding beside another.
        norms = np.sqrt(((weights_of * single[:, None]) ** 2).sum(axis=0) + (mixed ** 2).sum(axis=0))
        norms = np.where(norms > 0, norms, 1.0)
        self._weights_of = weights_of / norms  # blocks x coordinates: each block's weight in a combination
        # The blocks whose weight must not be negative: those holding some nonzero amount. A block that adds 0 (its
        # firms declare 0, or NULL) changes no net whatever its weight, so a cell padded with one and subtracted is
        # still a total (a street less its rest and an empty industry is the street's other industries).
        self._signed = np.array(sorted({at for parts in by_entity.values() for at in parts}), dtype=int)
        self._mass = single @ self._weights_of  # per coordinate: the magnitude of the taxpayers of one sign
        self._mixed = mixed / norms  # taxpayers whose amounts change sign x coordinates: their nets
        # Taxpayers (oriented, by position) x blocks: each one's amounts times its orientation.
        rows_at, cols_at, values = [], [], []
        for position, (entity, sign) in enumerate(entities):
            for at, value in by_entity.get(entity, {}).items():
                rows_at.append(position)
                cols_at.append(at)
                values.append(sign * value)
        self._oriented = csr_matrix((values, (rows_at, cols_at)), shape=(len(entities), len(single)))
        self._orientations: dict[Hashable, list[int]] = {}
        for position, (entity, _) in enumerate(entities):
            self._orientations.setdefault(entity, []).append(position)
        self._shares = BlockShares(by_entity, single, changed)
        self._programme: Programme | None = None
        self.last_block_duals: np.ndarray | None = None
        # Against the audit's budget of taxpayer-programmes (20 us each): one of these, warm-started from the last
        # optimum, takes about 0.2 ms over a hundred blocks, 2 ms over 2,400 (the demo's monthly report), 11 ms over
        # 2,300 with 288 taxpayers whose amounts change sign (each a column and two dense rows).
        self.work = 10 + (weights_of.shape[0] + 10 * len(changing)) // 10

    @classmethod
    def of(cls, basis: list[Row], amounts: dict[int, dict[Hashable, Any]],
           entities: list[Oriented] | None = None) -> _Totals | None:
        """The totals of the span of ``basis`` (columns' amounts per taxpayer in ``amounts``); None if every net
        is 0. ``entities`` fixes the taxpayers and their orientation (to compare two spaces)."""
        if not basis:
            return None
        rows = reduced([Row(dict(r.vector), dict(r.weights)) for r in basis])
        columns = sorted({c for row in rows for c in row.vector})
        by_entity, weights_of = _scaled(rows, columns, amounts)
        if not by_entity:
            return None
        single = np.zeros(len(columns))
        changing = []
        for entity, parts in by_entity.items():
            if _one_sign(parts.values()):
                for at, value in parts.items():
                    single[at] += abs(value)
            else:
                changing.append(entity)
        if not np.isfinite(single).all():
            raise TooComplex("amounts that are not finite")
        if entities is None:
            entities = []
            for entity in sorted(by_entity, key=repr):
                if entity in changing:
                    entities.extend([(entity, 1.0), (entity, -1.0)])
                else:
                    entities.append((entity, 1.0 if next(iter(by_entity[entity].values())) > 0 else -1.0))
        return cls(entities, weights_of, single, by_entity, changing, [row.weights for row in rows])

    def gauge_bounds(self) -> np.ndarray:
        """Per taxpayer an upper bound of its gauge, the smaller of two:

        - its largest share of a block (of that block's taxpayers of one sign): a total's share is a weighted
          mean of its blocks';
        - a certificate: its nets are ``u . x`` for every total ``x`` of the space, for any ``u`` that differs from
          its amounts by a vector orthogonal to the space, and ``u . x <= max_c (u_c / P_c) * sum_c x_c P_c``
          (``x >= 0``). The ``u`` of least ``sum_c u_c^2 / P_c`` spreads its amounts over the blocks the released
          cells tie to theirs, by their magnitude: a firm alone in a small block that every released cell takes
          together with a street's has a bound of its share of the street. A certificate that does not give the
          nets back to within rounding is not trusted.

        Both bound a taxpayer's net by a ratio r of the magnitudes of the taxpayers of one sign; for a taxpayer whose
        amounts change sign, which is not among them, its own magnitude is in the total too: r / (1 + r)."""
        magnitudes = abs(self._oriented)
        with np.errstate(divide="ignore"):
            per_mass = np.where(self._single > 0, 1.0 / np.where(self._single > 0, self._single, 1.0), np.inf)
        scaled = magnitudes.multiply(per_mass[None, :]).tocsr()
        ratios = np.asarray(scaled.max(axis=1).todense()).ravel()  # |net| <= ratio * sum_c x_c P_c (may be inf)
        points = np.asarray((self._oriented @ self._weights_of).T)  # coordinates x taxpayers
        w, mass = self._weights_of, self._single
        if (mass > 0).any():
            inverse = np.linalg.pinv(w.T @ (mass[:, None] * w))
            factors = inverse @ points  # coordinates x taxpayers: u_c / P_c = w_c . factor
            spread = w @ factors  # blocks x taxpayers: u_c / P_c
            back = w.T @ (mass[:, None] * spread)
            exact = np.linalg.norm(back - points, axis=0) <= 1e-9 * np.linalg.norm(points, axis=0) + 1e-300
            certified = np.maximum(spread.max(axis=0), 0.0) * (1 + 1e-6) + 1e-9
            ratios = np.where(exact, np.minimum(ratios, certified), ratios)
            self._certificates = (factors, exact)
        # A taxpayer of one sign is in P: its share is at most the ratio. One whose amounts change sign is not, and
        # its own magnitude is part of the total's: its share is at most ratio / (1 + ratio).
        with np.errstate(invalid="ignore"):
            own = np.where(np.isinf(ratios), 1.0, ratios / (1.0 + ratios))
        return np.minimum(1.0, np.where(self._changes_sign, own, ratios))

    def set_bound(self, weights: dict[int, float]) -> float:
        """An upper bound, without a programme, of the gauge of the point of a weighted set (taxpayers by position,
        weights of one sign): the bounds of :meth:`gauge_bounds` taken for the set as one, which is tighter than the
        sum of its members' where they are large in different blocks (a giant of one street and a lone firm of
        another). The set's nets add up to ``u . x`` with ``u`` the weighted sum of its members' amounts, or of
        their certificates where each gives its nets back; either way ``u . x <= max_c (u_c / P_c) sum_c x_c P_c``,
        and the total's magnitude is at least ``sum_c x_c P_c``."""
        if any(w < 0 for w in weights.values()):
            return float("inf")
        held: dict[int, float] = {}
        for e, w in weights.items():
            for at, value in self._amounts.get(self.entities[e][0], {}).items():
                held[at] = held.get(at, 0.0) + w * abs(value)
        ratio = max((value / self._single[at] if self._single[at] > 0 else float("inf")
                     for at, value in held.items() if value), default=0.0)
        certificates = getattr(self, "_certificates", None)
        if certificates is not None and all(certificates[1][e] for e in weights):
            factors = certificates[0]
            combined = sum(w * factors[:, e] for e, w in weights.items())
            certified = max(float((self._weights_of @ combined).max()), 0.0) * (1 + 1e-6) + 1e-9
            ratio = min(ratio, certified)
        return ratio

    def tail_point(self, chosen: dict[int, float], roles: tuple[float, ...],
                   left_out: frozenset[int] | set[int] = frozenset()) -> np.ndarray | None:
        """A point whose gauge bounds that of every set of the ``chosen`` taxpayers (by position, with their
        weights) and any others (but those ``left_out``, in either orientation) in ``roles``: in a total, any j
        others' nets add up, in magnitude, to at most each block's weight times the largest j magnitudes of its
        other taxpayers' amounts (every weight of a block holding an amount is at least 0), whatever their
        signs."""
        leaving = [self._name_at[self.entities[e][0]] for e in (*chosen, *left_out)]
        others = np.where(np.isin(self._largest_names, leaving), 0.0, self._largest_values)
        tails = -np.sort(-others, axis=1)[:, :len(roles)].sum(axis=1)
        # Where leaving out the set and the partners tried leaves fewer than the roles among the amounts kept, and
        # the block has more, its largest other amounts are read from all of them.
        short = (others > 0).sum(axis=1) < len(roles)
        left = set(leaving)
        for at in np.flatnonzero(short):
            if len(self._ranked[at]) > _LARGEST:
                rest = (value for value, i in self._ranked[at] if i not in left)
                tails[at] = sum(itertools.islice(rest, len(roles)))
        return self.point(chosen) + max(roles) * (tails @ self._weights_of)

    def candidate_tail_point(self, chosen: dict[int, float], weight: float, among: list[int]) -> np.ndarray:
        """A point whose gauge bounds that of every set of the ``chosen`` taxpayers (by position, with their
        weights) and one of ``among`` (by position: a taxpayer in one orientation) in the last role, of weight
        ``weight``. In a total (every weight of a block holding an amount at least 0) a taxpayer's net in its
        orientation is at most the sum of its blocks' weights times its amounts of that sign, so at most each
        block's weight times the largest such amount of ``among`` there. Unlike :meth:`tail_point`, a refund does
        not count for a partner oriented as a payment: the bound holds where a payment and a refund cancel."""
        tails = np.zeros(len(self._single))
        for f in among:
            name, sign = self.entities[f]
            for at, value in self._amounts.get(name, {}).items():
                if sign * value > tails[at]:
                    tails[at] = sign * value
        return self.point(chosen) + weight * (tails @ self._weights_of)

    def largest_among(self, z: np.ndarray, among: list[int]) -> int | None:
        """The taxpayer of ``among`` (by position) with the largest net in its orientation in the combination
        ``z``; None if none is positive."""
        nets = self._oriented[among] @ (self._weights_of @ z)
        found = int(np.argmax(nets))
        return among[found] if nets[found] > 0 else None

    def partner_group(self, f: int) -> tuple:
        """The partners bounded together (:meth:`candidate_tail_point`): those whose amounts have one sign, and
        those whose amounts change sign by orientation (a refund's block is not a payment's)."""
        return ("one sign",) if not self._changes_sign[f] else ("both signs", self.entities[f][1])

    def partner_candidates(self, chosen: dict[int, float], weight: float) -> list[int]:
        """The taxpayers (by position, each orientation) that may fill the last role, of weight ``weight``, beside
        the ``chosen`` ones (by position, with their weights) in a set that some total shows dominant: the others
        pass no block's test with them (:mod:`sandbox.audit.block_shares`), whatever the released cells."""
        members: dict[Hashable, float] = {}
        for e, w in chosen.items():
            name = self.entities[e][0]
            members[name] = members.get(name, 0.0) + w
        names = self._shares.partners(members, weight)
        if names is None:
            return list(range(len(self.entities)))
        return sorted(position for name in names for position in self._orientations.get(name, ()))

    def shared(self, weights: dict[int, float]) -> tuple[int, float, np.ndarray] | None:
        """Where every member of the set has amounts of one sign in one block only, and the same block, the set's
        point is a multiple of that block's (its taxpayers' magnitude): one programme serves every such set."""
        columns = {self._alone_in.get(self.entities[e][0]) for e in weights}
        if len(columns) != 1 or None in columns:
            return None
        (at,) = columns
        if not self._single[at]:
            return None
        share = sum(w * abs(self._amounts[self.entities[e][0]][at]) for e, w in weights.items()) / self._single[at]
        return at, share, self._single[at] * self._weights_of[at]

    def point(self, weights: dict[int, float]) -> np.ndarray:
        """The point sum of ``weight * orientation * nets`` of the taxpayers (by position)."""
        point = np.zeros(self._weights_of.shape[1])
        for e, weight in weights.items():
            entity, sign = self.entities[e]
            for at, value in self._amounts.get(entity, {}).items():
                point += (weight * sign * value) * self._weights_of[at]
        return point

    def gauge(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        """max ``point . z`` over the totals (every weight of a block holding some nonzero amount at least 0) whose
        taxpayers' magnitudes add up to at most 1, with the z that attains it."""
        dimension = self._weights_of.shape[1]
        blocks = len(self._signed)
        largest = float(np.abs(point).max())
        if not largest:
            return 0.0, np.zeros(dimension)
        changing = self._mixed.shape[0]
        if self._programme is None:
            w = csr_matrix(self._weights_of[self._signed])
            m = csr_matrix(self._mixed)
            eye = identity(changing, format="csr")
            parts = [hstack([-w, csr_matrix((blocks, changing))]),
                     hstack([csr_matrix(self._mass[None, :]), csr_matrix(np.ones((1, changing)))])]
            if changing:
                parts += [hstack([m, -eye]), hstack([-m, -eye])]
            self._programme = Programme(vstack(parts).tocsr(),
                                        np.concatenate([np.zeros(blocks), [1.0], np.zeros(2 * changing)]),
                                        [None] * dimension + [0.0] * changing, [None] * (dimension + changing))
        objective = np.concatenate([point / largest, np.zeros(changing)])
        status, optimum, x = self._programme.maximise(objective)
        if status != "optimal":  # unbounded: a total with no magnitude and a net, which cannot be
            raise TooComplex(f"the dominance programme over totals did not solve ({status})")
        self.last_block_duals = self._block_duals(objective, largest)
        return optimum * largest, x[:dimension]

    def _block_duals(self, objective: np.ndarray, largest: float) -> np.ndarray | None:
        """Per block, the last optimum's dual of its weight's row (``x_c >= 0``), scaled back to the point: for every
        total, ``point . z <= gauge * H - sum_c y_c x_c`` (the rows of the nets of taxpayers whose amounts change
        sign, and their variables' bounds, only lower it). None where the duals do not give the point back to well
        within the margins (then no bound is taken from them)."""
        assert self._programme is not None
        rows, columns = self._programme.duals()
        if (rows < -1e-12).any() or np.abs(columns[:self._weights_of.shape[1]]).max(initial=0.0) > 1e-12:
            return None
        back = self._programme.matrix.T @ rows + columns
        if np.abs(back - objective).max() > 1e-9 or (columns[self._weights_of.shape[1]:] > 1e-12).any():
            return None
        duals = np.zeros(len(self._single))
        duals[self._signed] = rows[:len(self._signed)] * largest
        return duals

    def dual_partner_bounds(self, duals: np.ndarray, weight: float) -> np.ndarray:
        """Per taxpayer (by position), how much it can add, in the last role of weight ``weight``, to the gauge of
        the set whose programme left the block ``duals`` (a weighted sum of its members' own): in every total,
        ``q_set . z <= G * H - sum_c y_c x_c`` and the partner's net is at most ``weight * sum_c x_c |a_fc|``, so
        the pair's gauge is at most ``G + max_c (weight |a_fc| - y_c)^+ / P_c`` over the partner's blocks
        (``H >= sum_c x_c P_c``; for a partner whose amounts change sign, ``P_c + |a_fc|``). A block the set's
        best totals avoid has a large dual: a partner that lives only there adds nothing. Infinite where a
        partner's block holds nothing to divide by. This is the Lagrangian bound of linear programming: the
        duals of one programme bound a neighbouring one without solving it."""
        magnitudes = abs(self._oriented).tocoo()
        gains = weight * magnitudes.data - duals[magnitudes.col]
        # A partner whose amounts change sign is not in P, and its own magnitude is in the total's: the ratio
        # (weight u - Y) / (P x + u) grows with u = |net| <= sum_c x_c |a_fc|, so its blocks count P_c + |a_fc|.
        mass = self._single[magnitudes.col] + np.where(self._changes_sign[magnitudes.row], magnitudes.data, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_mass = np.where(gains > 0, gains / mass, 0.0)
        per_mass = np.where((gains > 0) & (mass <= 0), np.inf, per_mass)
        bounds = np.zeros(len(self.entities))
        np.maximum.at(bounds, magnitudes.row, per_mass)
        return bounds * (1 + 1e-6) + 1e-9

    def rows_of(self, z: np.ndarray) -> frozenset[int]:
        """The released rows the combination with coordinates ``z`` takes."""
        scale = float(np.abs(z).max()) or 1.0
        return frozenset(i for j, weights in enumerate(self.weights) if abs(z[j]) > 1e-9 * scale for i in weights)
