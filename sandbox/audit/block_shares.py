"""Which sets of taxpayers can dominate some total at all: a test per block, without a programme.

In a total (every block holding an amount weighted ``x_c >= 0``) a taxpayer whose amounts all have one sign has
the magnitude ``sum_c x_c |a_ec|``, and the total's magnitude ``H`` is at least ``sum_c x_c P_c`` (``P_c``: the
block's magnitude of such taxpayers) plus the magnitudes of the nets of the set's members whose amounts change
sign. A weighted set (weights ``w_e``, the rules' roles: ``100 / k`` each under (n, k), ``1 + p / 100`` and 1
under p%) dominates the total when ``sum_e w_e |n_e| > H``. Write S1 for its members of one sign, S2 for those
whose amounts change sign; since ``|n_g| <= sum_c x_c |a_gc|``,

    sum_S1 w_e |n_e| + sum_S2 w_g |n_g| > H >= sum_c x_c P_c + sum_S2 |n_g|

gives ``sum_c x_c (sum_S1 w_e |a_ec| + sum_S2 (w_g - 1)^+ |a_gc| - P_c) > 0``, and with ``x >= 0`` some block
holds a positive term. So a set can dominate some total only where, in one block, its members of one sign
(weighted) and the excess weight of its members whose amounts change sign hold more than the block's magnitude
of one sign. This is the fact the module :mod:`sandbox.audit.dominated_totals` already uses for one taxpayer (a
total's share is a weighted mean of its blocks'), extended to sets and to amounts of both signs; it is the
(n, k) rule's own argument for why a cell is safe when each of its parts is, as in tau-ARGUS's and sdcTable's
treatment of a cell's largest contributors. Which totals the released cells make possible does not enter: the
test holds for every total, so it only ever rules out sets that no total can show dominant, and the programmes
judge the rest.

It matters where amounts change sign: the programme's bound on every partner of a set (a block's largest other
amounts) counts a refund and a payment that cancel in the total as two large magnitudes, and stays above 1 while
partners are tried one at a time; a refund beside a payment in one block's test is one magnitude, weighted by
the excess ``w - 1`` only.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

# Toward more candidates: the programmes count a gauge within 1e-6 of 1 as dominant (dominance.MARGIN); the test
# here is looser by as much again, so that rounding in either never drops a set a programme would find.
SLACK = 2e-6


class BlockShares:
    """Per block, its taxpayers' magnitudes, largest first, and its magnitude of taxpayers of one sign; answers
    which taxpayers may complete a set that some total shows dominant."""

    def __init__(self, amounts: dict[Hashable, dict[int, float]], single: np.ndarray,
                 changing: set[Hashable]) -> None:
        """``amounts``: per taxpayer its nonzero amounts by block position; ``single``: per block the magnitude of
        its taxpayers whose amounts have one sign; ``changing``: the taxpayers whose amounts have both signs."""
        self._amounts = amounts
        self._changing = changing
        self._threshold = (1 - SLACK) * np.asarray(single, dtype=float)
        ranked: list[list[tuple[float, Hashable]]] = [[] for _ in range(len(single))]
        for entity, parts in amounts.items():
            for at, value in parts.items():
                ranked[at].append((abs(value), entity))
        for values in ranked:
            values.sort(key=lambda pair: -pair[0])
        self._ranked = ranked
        self._alone: dict[float, set[Hashable]] = {}

    def term(self, entity: Hashable, at: int, weight: float) -> float:
        """A member's part of the test in block ``at``: its weighted magnitude if its amounts have one sign, only
        the excess of its weight over 1 if they change sign (the rest of its net is in the total's magnitude)."""
        magnitude = abs(self._amounts.get(entity, {}).get(at, 0.0))
        if entity in self._changing:
            return max(weight - 1 + SLACK, 0.0) * magnitude
        return weight * magnitude

    def partners(self, members: dict[Hashable, float], weight: float) -> set[Hashable] | None:
        """Every taxpayer (not a member) that, in the last role of weight ``weight``, may complete the weighted set
        ``members`` into one that some total shows dominant: one that passes the block test with them in one of
        their blocks, or alone in any block. None where the members pass some block's test without a partner:
        then any taxpayer may complete the set (a total that takes that block and the partner's)."""
        found = set(self.alone(weight))
        blocks = {at for entity in members for at in self._amounts.get(entity, {})}
        for at in blocks:
            need = self._threshold[at] - sum(self.term(e, at, w) for e, w in members.items())
            if need < 0:
                return None
            for magnitude, entity in self._ranked[at]:
                if weight * magnitude <= need:
                    break  # largest first, and a term is at most the weighted magnitude
                if self.term(entity, at, weight) > need:
                    found.add(entity)
        return found - set(members)

    def alone(self, weight: float) -> set[Hashable]:
        """The taxpayers that pass the block test alone in some block at weight ``weight`` (a lone firm's block,
        a giant's), cached per weight."""
        if weight not in self._alone:
            found = set()
            for at, values in enumerate(self._ranked):
                for magnitude, entity in values:
                    if weight * magnitude <= self._threshold[at]:
                        break
                    if self.term(entity, at, weight) > self._threshold[at]:
                        found.add(entity)
            self._alone[weight] = found
        return self._alone[weight]
