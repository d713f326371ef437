"""The search for combinations of released cells that the dominance rule would withhold (``sandbox.audit.dominance``).

A space is given by its basis rows (combinations of released cells over blocks) and each block's amounts per
taxpayer; a combination's nets are each taxpayer's amounts weighted by it. The random cases are decided by an
exhaustive checker that shares no code with the auditor: in a plane of combinations the share of the largest nets
is highest on a ray where some taxpayer's net is 0 (between two such rays every net keeps its sign, and a ratio
of linear functions is monotone along the segment), so the checker tries every such ray with exact fractions.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from dsbroker.policy.model import Dominance
from sandbox.audit.dominance import first_dominated
from sandbox.audit.linear import Row

N1 = Dominance(n=1, k=85, p=None)
N2 = Dominance(n=2, k=85, p=None)
P10 = Dominance(n=None, k=None, p=10)


def _find(space: list[dict[int, int]], amounts: dict[int, dict[str, int]], rule: Dominance, before=()):
    rows = [Row(dict(vector), {index: 1}) for index, vector in enumerate(space)]
    old = [Row(dict(vector), {100 + index: 1}) for index, vector in enumerate(before)]
    return first_dominated(rows, lambda: old, amounts, rule, lambda: None)


def _firms(prefix: str, amount: int, n: int) -> dict[str, int]:
    return {f"{prefix}{i}": amount + i for i in range(n)}


# --- fixed cases ---------------------------------------------------------------------------------------------------

def test_a_giants_block_less_a_small_block_of_others_is_dominated():
    amounts = {0: _firms("s", 100, 14) | {"GIANT": 700_000}, 1: _firms("m", 50, 3)}
    for rule in (N1, N2, P10):
        leak = _find([{0: 1, 1: -1}], amounts, rule)
        assert leak is not None and "GIANT" in leak.taxpayers, rule
        assert leak.rows == {0}


def test_a_giants_growth_beside_firms_that_hardly_move_is_dominated():
    """The giant's 2026 block less its 2025 block: the small firms' nets are their small changes."""
    small = _firms("s", 1_000, 20)
    amounts = {0: small | {"GIANT": 50_000}, 1: {f: a + 3 for f, a in small.items()} | {"GIANT": 58_000}}
    assert _find([{1: 1, 0: -1}], amounts, N1) is not None


def test_a_weighted_combination_is_judged_by_its_weighted_nets():
    """The giant holds 60,000 of A and 10,000 of B beside the same 20 firms, who declare twice as much in A: neither
    block nor A - B is dominated (60%, 33%, 71%), but 2 B - A leaves the firms at 0 and the giant at -40,000."""
    firms = _firms("f", 1_000, 20)
    amounts = {0: {"GIANT": 60_000} | {f: 2 * a for f, a in firms.items()}, 1: {"GIANT": 10_000} | firms}
    for combination in ({0: 1}, {1: 1}, {0: 1, 1: -1}):
        assert _find([combination], amounts, N2) is None, combination
    leak = _find([{0: 1}, {1: 1}], amounts, N1)
    assert leak is not None and leak.taxpayers == ("GIANT",)


def test_a_remainder_of_many_comparable_firms_is_not_dominated():
    amounts = {0: _firms("a", 1_000, 12), 1: _firms("b", 1_100, 12)}
    for rule in (N1, N2, P10):
        assert _find([{0: 1, 1: 1}], amounts, rule) is None, rule


def test_a_difference_of_two_comparable_cells_of_other_taxpayers_is_not_dominated():
    amounts = {0: _firms("a", 1_000, 12), 1: _firms("b", 1_000, 12)}
    assert _find([{0: 1, 1: -1}], amounts, N2) is None


def test_the_p_percent_rule_finds_the_second_largest_estimating_the_largest():
    """Two firms of 10,000 and 9,000 beside ten of 10: what is left after the two (100) is under 10% of 10,000."""
    amounts = {0: {"A": 10_000, "B": 9_000} | _firms("s", 10, 10)}
    assert _find([{0: 1}], amounts, P10) is not None
    assert _find([{0: 1}], amounts, N1) is None  # the largest holds 52%


def test_a_set_dominant_before_the_answer_is_not_the_answers():
    amounts = {0: _firms("s", 100, 14) | {"GIANT": 700_000}, 1: _firms("m", 50, 3)}
    assert _find([{0: 1, 1: -1}], amounts, N1, before=[{0: 1, 1: -1}]) is None


# --- random planes against an exhaustive checker -------------------------------------------------------------------

def _dominated(nets: list[Fraction], rule: Dominance) -> Fraction | None:
    """How far past the rule the nets are (positive: dominated), exactly; None when no net is nonzero."""
    magnitudes = sorted((abs(n) for n in nets if n), reverse=True)
    total = sum(magnitudes)
    if not total:
        return None
    margins = []
    if rule.n is not None and rule.k is not None:
        margins.append(sum(magnitudes[:rule.n]) / total - Fraction(rule.k) / 100)
    if rule.p is not None:
        margins.append(Fraction(rule.p) / 100 * magnitudes[0] - (total - sum(magnitudes[:2])))
        margins[-1] /= total
    return max(margins)


def _nets(space, amounts, z) -> list[Fraction]:
    nets: dict[str, Fraction] = {}
    for weight, vector in zip(z, space, strict=True):
        for column, coefficient in vector.items():
            for entity, amount in amounts[column].items():
                nets[entity] = nets.get(entity, Fraction(0)) + weight * coefficient * amount
    return list(nets.values())


def _checker(space, amounts, rule) -> Fraction | None:
    """The largest margin over the rays where some taxpayer's net is 0 (and the axes)."""
    entities = sorted({e for column in amounts.values() for e in column})
    gradients = []
    for entity in entities:
        gradient = [sum(coefficient * amounts[c].get(entity, 0) for c, coefficient in vector.items())
                    for vector in space]
        gradients.append(gradient)
    rays = [(Fraction(1), Fraction(0)), (Fraction(0), Fraction(1))]
    for g in gradients:
        if any(g):
            rays.append((Fraction(-g[1]), Fraction(g[0])))
    margins = [m for ray in rays for z in (ray, (-ray[0], -ray[1]))
               if (m := _dominated(_nets(space, amounts, z), rule)) is not None]
    return max(margins) if margins else None


@pytest.mark.parametrize("seed", range(150))
def test_the_search_finds_a_dominated_combination_exactly_when_one_exists(seed):
    generator = random.Random(seed)
    columns = generator.randint(2, 4)
    pool = [f"T{i}" for i in range(generator.randint(3, 10))]
    amounts = {}
    for column in range(columns):
        firms = generator.sample(pool, generator.randint(1, len(pool)))
        amounts[column] = {f: generator.choice([generator.randint(1, 50), generator.randint(1, 5_000)])
                           for f in firms}
    space = []
    while len(space) < 2:
        vector = {c: generator.choice([-2, -1, 1, 1, 2]) for c in range(columns) if generator.random() < 0.7}
        if vector:
            space.append(vector)
    rule = generator.choice([N1, N2, P10])
    margin = _checker(space, amounts, rule)
    if margin is not None and abs(margin) < Fraction(1, 10**5):
        pytest.skip("a tie with the rule's bound: floating point may go either way (toward withholding)")
    found = _find(space, amounts, rule)
    assert (found is not None) == (margin is not None and margin > 0), (space, amounts, rule, margin, found)


# --- the audit's budget of programme work -------------------------------------------------------------------------

def test_every_search_of_one_audit_spends_one_budget_and_past_it_the_space_is_too_complex():
    """An answer of many cells was searched anew for each cell it withheld, each search to its own limit (a
    product's street x month table: 2,496 programmes over 2,286 taxpayers, two minutes): the audit's check now
    carries one budget of taxpayer-programmes for all of them, and past it the search raises TooComplex, which
    the auditor withholds (never releases unsearched)."""
    from sandbox.audit.linear import AuditCheck, TooComplex

    amounts = {0: _firms("s", 100, 14) | {"GIANT": 700_000}, 1: _firms("m", 50, 3)}
    rows = [Row({0: 1, 1: -1}, {0: 1})]
    roomy = AuditCheck(lambda: None)
    assert first_dominated(rows, lambda: [], amounts, N1, roomy) is not None
    spent = roomy.work
    assert 0 < spent <= roomy.most_work
    shared = AuditCheck(lambda: None, most_work=spent + spent // 2)
    assert first_dominated(rows, lambda: [], amounts, N1, shared) is not None  # the first search fits
    with pytest.raises(TooComplex):
        first_dominated(rows, lambda: [], amounts, N1, shared)  # the second does not: the budget is shared
