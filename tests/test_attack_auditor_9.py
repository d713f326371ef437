"""Ninth round of attacks on the released-cell auditor (sandbox.audit), found reviewing round 8's fix: each test
fails while the attack works. Blocks are built by hand, as in tests/test_attack_auditor_8.py.
"""

from __future__ import annotations

from dsbroker.policy.model import Dominance
from sandbox.audit.auditor import Judge, Rules, _new_leaks
from sandbox.audit.blocks import Blocks

K = 10


def _firms(base: int, amount: int, n: int) -> dict:
    return {f"F{base + i:04d}": (12, (amount,), (12,)) for i in range(n)}


def _leaks(contributions: list[dict], cells: list[set[int]], rule: Dominance) -> list:
    blocks = Blocks(signatures=[()] * len(contributions), measures=("revenue",), contributions=contributions)
    judge = Judge(blocks, ["sum:revenue"], Rules(K, rule), "tax.declarations")
    return _new_leaks([], [frozenset(cell) for cell in cells], judge, lambda: None)


def test_a_dominated_block_less_a_small_block_of_other_taxpayers_is_a_leak():
    """A difference was judged by the dominance rule only when its two sides share a taxpayer. A giant's block
    (14 small firms beside it) less a block of 3 other small firms shares none, and holds 18 taxpayers (no
    combination of fewer than k): P u D less P u M gives the giant's figure to within M's and the small firms'
    (here 1,550 on 700,000)."""
    giant = _firms(0, 100, 14) | {"GIANT": (12, (700_000,), (12,))}
    blocks = [_firms(200, 5_000, 15), giant, _firms(100, 50, 3)]
    P, D, M = range(3)
    for rule in (Dominance(n=1, k=85, p=None), Dominance(n=2, k=85, p=None), Dominance(n=None, k=None, p=10)):
        assert _leaks(blocks, [{P, D}, {P, M}], rule), f"D - M (dominated by the giant under {rule}) is not found"
