"""Seventh round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works.

Round 6 closed weighted combinations with a rank test per group of failing blocks that share contributing taxpayers
and hold fewer than k of them (``Judge.small_groups``). These attack what is around it. They reuse the data of
tests/test_released_cell_auditor.py (LONE alone in street A industry 99) and round 6's cells.
"""

from __future__ import annotations

from tests.test_attack_auditor import Stack, _one
from tests.test_attack_auditor_4 import _copy
from tests.test_attack_auditor_5 import (A, B, IN_99, SECOND, SUM, YEAR, lone_change_cells,
                                         lone_weighted_cells)
from tests.test_attack_auditor_6 import DORMANT
from tests.test_released_cell_auditor import LONE, MONTHS, STREET_B, data, _truth  # noqa: F401
from tests.conftest import XUANWU

INSERT = "INSERT INTO tax.declarations VALUES (?, ?, ?, ?, ?, 'X', '173', 'small', ?, 0, 0, 0, 1)"


def _lone_in_a(data, year: int) -> int:
    return _truth(data, f"taxpayer_id = '{LONE}' AND {A} AND {IN_99} AND {YEAR[year]}")


# --- 1. A small group joined to a larger one through one shared taxpayer -----------------------------------------

def _firm(taxpayer: str, industry: str, revenue: int) -> list[tuple[str, list]]:
    return [(INSERT, [taxpayer, month, XUANWU, STREET_B, industry, revenue + m]) for m, month in enumerate(MONTHS)]


# LONE also trades in street B (a multi-street firm), in industry 98 beside 8 small firms (9 taxpayers: the block
# fails); one of those 8 also trades in industry 97 beside 5 others (6: fails too).
BRANCHES = (_firm(LONE, "98", 2_000) + [r for n in range(8) for r in _firm(f"91320102BR98{n:04d}X", "98", 2_100 + n)]
            + _firm("91320102BR980000X", "97", 1_900)
            + [r for n in range(5) for r in _firm(f"91320102BR97{n:04d}X", "97", 2_050 + n)])


def test_a_weighted_sum_of_one_firms_two_years_is_found_when_the_firm_also_trades_in_a_larger_group(data, tmp_path):  # noqa: F811
    """``small_groups`` joins failing columns that share any contributor, and skips the rank test when the joined
    group holds k or more. Round 6's four street-A cells give 2 * LONE_2025 + LONE_2026 (LONE's blocks in street
    A, one taxpayer); three more cells in street B, each of 15 or more firms, put B98 + B97 (LONE and 13 others,
    14 taxpayers: a passing remainder) in the space too. LONE is in B98 and one firm is in both B98 and B97, so
    the four failing columns form one group of 14 taxpayers and the test is skipped; the combination
    2 * A99_2025 + A99_2026 still depends on LONE alone (it takes no street-B column) and leaves."""
    branched = _copy(data, tmp_path, "branches.duckdb", BRANCHES)
    stack_ = Stack(branched, tmp_path, tmp_path / "released.sqlite")
    try:
        client, other = stack_.client(), stack_.client("xuanwu-tjj")
        street_b = [_one(client, SUM + "industry_code IN ('97', '98')"),
                    _one(client, SUM + f"{B} AND industry_code IN ('98', '51')"),
                    _one(other, SUM + f"{B} AND industry_code IN ('97', '52')", SECOND)]
        plus, minus = lone_weighted_cells(client, other)
    finally:
        stack_.stop()
    assert None not in street_b, "the street-B cells are of many firms each and pass"
    weighted = 2 * _lone_in_a(branched, 2025) + _lone_in_a(branched, 2026)
    released = plus + minus
    assert None in released or sum(plus) - sum(minus) != weighted, \
        f"2 x LONE's 2025 revenue in street A + its 2026 revenue ({weighted}) is recovered"


# --- 2. Contributors: one COUNT(*) in the scope makes every dormant firm a contributor to every sum --------------

def test_one_firms_change_is_not_given_when_a_row_count_makes_dormant_firms_contributors(data, tmp_path):  # noqa: F811
    """``Judge.contributors`` counts a taxpayer with a row as a contributor as soon as rows (or entities) are
    released anywhere in the scope, for every statistic at once. Round 6's dormant shells (10 firms declaring 0 in
    street A industry 99) were closed because they add nothing to a sum; one COUNT(*) cell (street B's, of 50
    firms, on exactly the rows of a SUM cell the attack asks anyway) makes them contributors again, LONE's blocks
    then hold 11 "contributors", the group test is skipped, ``shared_few`` (11 entities) passes the difference, and
    round 6's six SUM cells give LONE's exact change of revenue from 2025 to 2026, which depends on LONE alone."""
    padded = _copy(data, tmp_path, "dormant.duckdb", DORMANT)
    stack_ = Stack(padded, tmp_path, tmp_path / "released.sqlite")
    try:
        client, other = stack_.client(), stack_.client("xuanwu-tjj")
        count = _one(client, f"SELECT COUNT(*) FROM tax.declarations WHERE {B}")
        plus, minus = lone_change_cells(client, other)
    finally:
        stack_.stop()
    assert count is not None
    change = _lone_in_a(padded, 2025) - _lone_in_a(padded, 2026)
    released = plus + minus
    assert None in released or sum(plus) - sum(minus) != change, \
        f"LONE's change of revenue from 2025 to 2026 ({change}) is recovered"


# --- 4. The rank test per small group ignores the deadline -----------------------------------------------------

def test_the_rank_test_per_small_group_stops_at_the_deadline():
    """``_Space._small_group_leaks`` rebuilds an echelon form of the whole basis once per small group and never
    calls ``check``: its cost grows as groups x basis x fill-in (cubic here), and the audit, which holds the scope's
    lock (every other audit of the dataset waits), runs on past the query's deadline. 800 single-firm failing blocks
    chained by 800 cells (each cell two neighbouring blocks): with a deadline of one second the audit should stop
    with QUERY_TIMEOUT within a few seconds; it runs about 14 s (and ``_withhold`` calls it again per cell it
    withholds)."""
    import time

    from sandbox.audit.auditor import Judge, Rules, _new_leaks
    from sandbox.audit.blocks import Blocks

    class Late(Exception):
        pass

    n = 800
    blocks = Blocks(signatures=[()] * (n + 1), measures=("revenue",),
                    contributions=[{f"F{i}": (12, (1_000 + i,), (12,))} for i in range(n + 1)])
    judge = Judge(blocks, ["sum:revenue"], Rules(10, None), "tax.declarations")
    rows = [frozenset({i, i + 1}) for i in range(n)]
    start = time.monotonic()

    def check() -> None:
        if time.monotonic() > start + 1:
            raise Late

    try:
        _new_leaks([], rows, judge, check)
    except Late:
        pass
    spent = time.monotonic() - start
    assert spent < 4, f"the audit ran {spent:.1f} s past a deadline of 1 s"
