"""Sixth round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works.

Round 5 taught the auditor *differences* (1 on some blocks, -1 on others) besides totals; these attack what is
around them. They reuse the data of tests/test_released_cell_auditor.py (LONE alone in street A industry 99, 2025
and 2026) and its ``stack`` fixture (a fresh released-cell ledger, a second department).
"""

from __future__ import annotations

from tests.test_attack_auditor import Stack, _one
from tests.test_attack_auditor_4 import _copy
from tests.test_attack_auditor_5 import (A, SECOND, SUM, YEAR, lone_change_cells,
                                         lone_weighted_cells)
from tests.test_released_cell_auditor import LONE, MONTHS, STREET_A, data, stack, _truth  # noqa: F401
from tests.conftest import XUANWU



def _lone(data, year: int) -> int:
    return _truth(data, f"taxpayer_id = '{LONE}' AND {YEAR[year]}")


# --- 1. Combinations with other coefficients than 1 and -1 ------------------------------------------------------

def test_a_weighted_sum_of_one_firms_two_years_is_not_given_by_released_cells(data, stack):  # noqa: F811
    """The search looks only for vectors of 0, 1 and -1 on the failing blocks. Four street-A cells of 16 to 47
    firms make the space on failing blocks exactly the line of 2*LONE_2025 + LONE_2026: one firm's figure (with its
    2025 revenue known from its own annual report, the 2026 one follows), which is neither a total nor a difference:
    A x (99, 51) x 2025 + A x (99, 52, 65, 72) x 2025 - A x not-99 + A x 2026 = 2 LONE_2025 + LONE_2026."""
    client, other = stack(), stack("xuanwu-tjj")
    plus, minus = lone_weighted_cells(client, other)
    weighted = 2 * _lone(data, 2025) + _lone(data, 2026)
    released = plus + minus
    assert None in released or sum(plus) - sum(minus) != weighted, \
        f"2 x LONE's 2025 revenue + its 2026 revenue ({weighted}) is recovered"


# --- 2. A difference padded with taxpayers that add nothing --------------------------------------------------

DORMANT = [("INSERT INTO tax.declarations VALUES (?, ?, ?, ?, '99', 'X', '173', 'small', 0, 0, 0, 0, 1)",
            [f"91320102ZERO{n:04d}X", month, XUANWU, STREET_A]) for n in range(10) for month in MONTHS]


def test_one_firms_change_is_not_given_when_dormant_firms_share_its_blocks(data, tmp_path):  # noqa: F811
    """A difference is a leak when its sides share taxpayers "fewer than k in all" (``Judge.shared_few``), and it
    counts *entities*: every taxpayer with a row in the blocks, while the cell rule for a sum counts contributors
    (nonzero amounts). Ten dormant shells registered in street A industry 99 that declare 0 every month (common in
    tax data) make LONE's blocks 11 entities and 1 contributor: each fails as a total, but their difference "is
    among 11 taxpayers" and passes. Round 5's six cells then give LONE's exact change from 2025 to 2026 (the same
    holds when the 0-declaring shells sit in another block that the difference takes on one side only)."""
    padded = _copy(data, tmp_path, "dormant.duckdb", DORMANT)
    stack_ = Stack(padded, tmp_path, tmp_path / "released.sqlite")
    try:
        client, other = stack_.client(), stack_.client("xuanwu-tjj")
        plus, minus = lone_change_cells(client, other)
    finally:
        stack_.stop()
    change = _lone(padded, 2025) - _lone(padded, 2026)
    released = plus + minus
    assert None in released or sum(plus) - sum(minus) != change, \
        f"LONE's change of revenue from 2025 to 2026 ({change}) is recovered"


SHELL = [("INSERT INTO tax.declarations VALUES ('91320102SHEL00001X', ?, ?, ?, '98', 'X', '173', 'small', "
           "0, 0, 0, 0, 1)", [month, XUANWU, STREET_A]) for month in MONTHS]


def test_a_firms_year_is_not_given_by_a_difference_with_a_block_that_adds_nothing(data, tmp_path):  # noqa: F811
    """A block no entity contributes to (a sum of zeros) "adds nothing to a union, so it is counted with the failing
    blocks", and a total that takes it is judged as the rest; but a *difference* with it on the other side is
    judged only by ``shared_few`` ("one small cell less another of other taxpayers is allowed"), so LONE's year less
    a dormant shell's zeros leaves. One shell declaring 0 (a firm on the tax bureau's public list of dormant or
    abnormal taxpayers) in industry 98 of street A: A x (99, 51, 52, 65, 72) x 2025 - A x (98, 51, 52, 65, 72) x
    2025 = LONE_2025 - 0, from two cells of 58 firms each."""
    shelled = _copy(data, tmp_path, "shell.duckdb", SHELL)
    stack_ = Stack(shelled, tmp_path, tmp_path / "released.sqlite")
    try:
        client, other = stack_.client(), stack_.client("xuanwu-tjj")
        with_lone = _one(client, SUM + f"{A} AND industry_code IN ('99', '51', '52', '65', '72') AND {YEAR[2025]}")
        with_shell = _one(other, SUM + f"{A} AND industry_code IN ('98', '51', '52', '65', '72') AND {YEAR[2025]}",
                          SECOND)
    finally:
        stack_.stop()
    year = _lone(shelled, 2025)
    assert None in (with_lone, with_shell) or with_lone - with_shell != year, \
        f"LONE's 2025 revenue ({year}) is recovered"
