"""Eighth round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works.

Round 7 tries, as sets of few taxpayers, only the connected components of failing columns (by shared taxpayers) and,
per column, the columns whose taxpayers are among its own. A union of two *components* is never tried, and the
dominance rule is never applied to a difference. These tests drive ``_new_leaks`` on blocks built by hand (as round
7's deadline test does): each block is the rows of one group of firms, each released cell a union of blocks; blocks
``P*`` hold 15 firms each and pass.
"""

from __future__ import annotations

from sandbox.audit.auditor import Judge, Rules, _new_leaks
from sandbox.audit.blocks import Blocks
from dsbroker.policy.model import Dominance

K = 10


def _many(base: int, amount: int = 1_000, n: int = 15) -> dict:
    """A block of ``n`` firms (15: it passes), each declaring 12 months."""
    return {f"F{base + i:04d}": (12, (amount + i,), (12,)) for i in range(n)}


def _alone(firm: str, amount: int) -> dict:
    return {firm: (12, (amount,), (12,))}


def _leaks(contributions: list[dict], cells: list[set[int]], dominance: Dominance | None = None) -> list:
    blocks = Blocks(signatures=[()] * len(contributions), measures=("revenue",), contributions=contributions)
    judge = Judge(blocks, ["sum:revenue"], Rules(K, dominance), "tax.declarations")
    return _new_leaks([], [frozenset(cell) for cell in cells], judge, lambda: None)


# --- 1. A weighted combination across two components of few taxpayers -------------------------------------------

def test_one_firm_plus_twice_another_is_a_leak():
    """Two firms each alone in their block (LONE in street A industry 99, LATE in A x 72 x December 2026) are two
    components of one taxpayer each; the rank test is run on each alone, with the other's column ordered first, so a
    basis row on both never has its pivot in the tested set. Three cells of 15 to 32 firms (P u LONE u LATE,
    Q u LATE, P u Q) give c1 + c2 - c3 = LONE + 2 LATE: a function of two taxpayers (either one, knowing its own
    figure, learns the other's exactly; an outsider who knows one from a published report learns the other)."""
    blocks = [_many(0), _many(100), _alone("LONE", 2_000), _alone("LATE", 3_000)]
    P, Q, LONE, LATE = range(4)
    found = _leaks(blocks, [{P, LONE, LATE}, {Q, LATE}, {P, Q}])
    assert found, "LONE + 2 x LATE (two taxpayers) is derivable from three cells of many firms and is not found"


def test_two_firms_weighted_growth_is_a_leak():
    """The unweighted sum of two firms' changes (LONE_26 - LONE_25 + LATE_26 - LATE_25) is a difference that
    ``shared_few`` catches; with weight 2 on the second firm it is neither a total nor a difference, and each firm's
    two years are a component of their own, so no set tried holds both. Six cells of 15 to 45 firms
    (P u LONE_26 u LATE_26, Q u LATE_26, P' u LONE_25 u LATE_25, Q' u LATE_25, P u Q u X, P' u Q' u X) give
    c1 + c2 - c3 - c4 - c5 + c6 = (LONE_26 - LONE_25) + 2 (LATE_26 - LATE_25): two firms' growth, fewer than k."""
    blocks = [_many(0), _many(100), _many(200), _many(300), _many(400),
              _alone("LONE", 2_000), _alone("LONE", 2_150), _alone("LATE", 3_000), _alone("LATE", 3_400)]
    P, Q, P2, Q2, X, LONE_25, LONE_26, LATE_25, LATE_26 = range(9)
    cells = [{P, LONE_26, LATE_26}, {Q, LATE_26}, {P2, LONE_25, LATE_25}, {Q2, LATE_25}, {P, Q, X}, {P2, Q2, X}]
    assert _leaks(blocks, cells), \
        "(LONE's growth) + 2 x (LATE's growth) is derivable and is not found"


# --- 2. A difference of two dominated blocks -------------------------------------------------------------------

def _dominated(giant: int, base: int) -> dict:
    """14 small firms (about 100 a month) beside one giant: 15 contributors, but the giant holds over 95%."""
    block = _many(base, amount=100, n=14)
    block["GIANT"] = (12, (giant,), (12,))
    return block


def test_a_dominant_firms_growth_is_not_given_by_a_difference_of_its_two_years():
    """A block of 15 contributors with one firm dominating it fails the dominance rule and is in the unsafe space,
    but a difference is judged only by ``shared_few`` (fewer than k contributors) and the small sets by the number
    of contributors: the dominance rule, which exists to protect exactly that giant, is never applied. A street's
    industry with its giant, 2026 less 2025: (P u D_26) - (P u D_25) = D_26 - D_25, the giant's growth up to the
    small firms' (here exactly, as they did not change), from two cells of 30 firms each."""
    blocks = [_many(0), _dominated(50_000, 500), _dominated(58_000, 500)]
    P, D_25, D_26 = range(3)
    for rule in (Dominance(n=1, k=80, p=None), Dominance(n=None, k=None, p=10)):
        found = _leaks(blocks, [{P, D_26}, {P, D_25}], rule)
        assert found, f"the giant's growth (D_26 - D_25, both blocks dominated under {rule}) is not found"
