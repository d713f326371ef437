"""Third round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works.

They reuse the data of tests/test_released_cell_auditor.py (LONE alone in street A industry 99; LATE alone in
month 24 of street A industry 72) and the stacks of it and of tests/test_attack_auditor.py (_2).
"""

from __future__ import annotations

import pytest

from tests.conftest import GRANT
from tests.test_attack_auditor import STREET, Stack, _one
from tests.test_attack_auditor_2 import _refreshed
from tests.test_released_cell_auditor import (ALL_BUT_99, LATE, LONE, MONTHS, STREET_A, STREET_B,  # noqa: F401
                                              data, stack, _truth)

SUM = "SELECT SUM(revenue) FROM tax.declarations WHERE "
SECOND = "xuanwu-tjj-2026-001"


# --- 1. Stale cells that the old rows already span ------------------------------------------------------------

THREE = f"{STREET} AND industry_code IN ('51', '52', '65')"


@pytest.mark.parametrize("published", ["the cell twice", "a table with its margin"])
def test_a_stale_cell_released_twice_before_is_not_asked_again_to_give_the_late_filer_away(data, tmp_path, published):  # noqa: F811
    """_stale_leaks blames a stale cell only if the other *old* rows alone do not give it, and in_span takes the
    old rows first. Street A industry 51 is released twice before (alone, and as a group of street A by
    industry: two coverages, the same rows). A late filer NEW declares in street A industry 51; both cells go
    stale, and each is "derivable from the other old row alone", so asking street A industry 51 again is
    released: it less the value released before is NEW's declaration. The same with a published table and its
    margin (street A's industries 51, 52, 65 and their total): industry 51 is the total less the other two."""
    amount = 4_321
    refreshed = _refreshed(data, tmp_path, [(MONTHS[4], "51", amount)])
    ledger = tmp_path / "released.sqlite"
    first = Stack(data, tmp_path, ledger, name="before")
    try:
        client = first.client()
        if published == "the cell twice":
            old = _one(client, SUM + f"{STREET} AND industry_code = '51'")
            where = STREET
        else:
            assert _one(client, SUM + THREE) is not None
            old, where = None, THREE
        table = client.query(GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {where} "
                                    "GROUP BY industry_code").rows
        old = old or {row[0]: row[1] for row in table}["51"]
        assert {row[0]: row[1] for row in table}["51"] == old
    finally:
        first.stop()
    second = Stack(refreshed, tmp_path, ledger, name="after")
    try:
        again = _one(second.client("xuanwu-tjj"), SUM + f"{STREET} AND industry_code = '51'", SECOND)
    finally:
        second.stop()
    assert old is not None
    assert again is None or again - old != amount, "the late filer's declaration is recovered"


# --- 3. Distinct counts: stale distinct-count cells leave the class audit ----------------------------------------

def test_a_refresh_does_not_let_the_month_24_only_taxpayer_be_counted(data, tmp_path):  # noqa: F811
    """The class audit of distinct counts takes only *valid* old cells. Street A's distinct taxpayers over all
    months is released (59); a late filer NEW then declares in month 24 only, so that cell goes stale and
    leaves the class audit; street A over months 1-23 (58, unchanged by the refresh) is then released, though
    on the same data it is withheld: 59 - 58 = 1, the one taxpayer (LATE) declaring only in month 24."""
    refreshed = _refreshed(data, tmp_path, [(MONTHS[23], "51", 2_000)])
    ledger = tmp_path / "released.sqlite"
    count = "SELECT COUNT(DISTINCT taxpayer_id) FROM tax.declarations WHERE "
    early = f"{STREET} AND period BETWEEN DATE '2025-01-01' AND DATE '2026-11-01'"
    first = Stack(data, tmp_path, ledger, name="before")
    try:
        every = _one(first.client(), count + STREET)
    finally:
        first.stop()
    second = Stack(refreshed, tmp_path, ledger, name="after")
    try:
        months23 = _one(second.client("xuanwu-tjj"), count + early, SECOND)
    finally:
        second.stop()
    assert every is not None
    assert months23 is None or every - months23 >= 10, \
        "a set of fewer than k taxpayers (those of street A declaring only in month 24) is counted"


def test_a_distinct_count_less_a_row_count_equal_to_one_does_not_count_the_month_24_only_taxpayer(data, stack):  # noqa: F811
    """The class audit takes only distinct-count cells; the block system takes COUNT(*) as additive, which it
    is. Each firm declares once a month, so street A's COUNT(*) in month 1 is its distinct taxpayers of month
    1 (58): street A's distinct taxpayers (59) less it is 1, the taxpayer (LATE) with no month-1 declaration,
    as 59 less 58 distinct counts is (withheld: test_attack_auditor's distinct-count test)."""
    client = stack()
    every = _one(client, f"SELECT COUNT(DISTINCT taxpayer_id) FROM tax.declarations WHERE {STREET}")
    month1 = _one(client, f"SELECT COUNT(*) FROM tax.declarations WHERE {STREET} AND period = DATE '2025-01-01'")
    assert every is None or month1 is None or every - month1 >= 10, \
        "a set of fewer than k taxpayers (those of street A with no declaration in month 1) is counted"


# --- 4. Statistics an output "does not reveal": times zero, but NULL when out of range -----------------------

def _big(t: int) -> str:
    """(S - t + 1e9) * 1e29: at most 1e38 (a value) where street A's total S is at most t, past it (NULL) if not."""
    return f"((SUM(revenue) - {t} + 1000000000) * 1000000000 * 1000000000 * 1000000000 * 100)"


@pytest.mark.parametrize("threshold", [
    lambda t: f"{_big(t)} * 0",        # "a statistic times literal 0 reveals nothing"
    lambda t: f"{_big(t)} - {_big(t)}",  # "x - x reveals nothing"
], ids=["times zero", "x minus x"])
def test_an_output_times_zero_that_overflows_to_null_does_not_reveal_an_unrecorded_total(data, stack, threshold):  # noqa: F811
    """statistics_read calls anything times literal 0 (or x - x) unrevealing, so neither the audit nor the ledger
    sees the cell; but ``(S - t + 1e9) * 1e29 * 0`` is 0 if S <= t and NULL (beyond 1e38) if not: a
    comparison of S with any t.
    60 thresholds per query, five queries: street A's total, never audited nor recorded. Then street A
    without industry 99 passes the audit (nothing in the ledger to difference it with): LONE's revenue."""
    client = stack()
    low, high = 0, 100_000_000
    while high - low > 1:
        points = sorted({low + (high - low) * i // 60 for i in range(1, 60)} | {low})
        row = client.query(GRANT, "SELECT " + ", ".join(threshold(t) for t in points)
                           + f" FROM tax.declarations WHERE {STREET}").rows[0]
        above = [t for t, value in zip(points, row, strict=True) if value is None]  # S > t
        below = [t for t, value in zip(points, row, strict=True) if value is not None]  # S <= t
        low = max(above, default=low)
        high = min(below, default=high)
    total = high
    assert total == _truth(data, STREET)  # the total, learned without a cell the ledger records
    rest = _one(client, SUM + f"{STREET} AND {ALL_BUT_99}")
    assert rest is None or total - rest != _truth(data, f"taxpayer_id = '{LONE}'"), "LONE's revenue is recovered"


# --- 2. TooComplex: a space too large to search withholds honest answers ----------------------------------------

from tests.test_attack_auditor_2 import INDUSTRIES, _codes, halves  # noqa: E402,F401


@pytest.mark.parametrize("honest", [
    "SELECT industry_code, SUM(revenue) FROM tax.declarations GROUP BY industry_code",
    "SELECT SUM(revenue) FROM tax.declarations WHERE size_class = 'small' AND " + _codes(INDUSTRIES[0:15]),
    "SELECT size_class, SUM(revenue) FROM tax.declarations WHERE " + _codes(INDUSTRIES[0:15])
    + " GROUP BY size_class",
    "SELECT size_class, SUM(revenue) FROM tax.declarations WHERE " + _codes(INDUSTRIES[3:20])
    + " GROUP BY size_class",
])
def test_a_space_made_too_complex_by_one_department_does_not_withhold_anothers_safe_table(halves, honest):  # noqa: F811
    """One department releases windows of 10 industries and a table by size_class (each cell safe); on the
    partition by industry and size class the totals search then gives up (TooComplex), and from then on an
    answer that adds a dimension there is blamed whole. Another department's table of street A by industry
    (30 cells of 12 firms; with everything released it gives no total of fewer than k: each is 12 firms, and
    any union of them and of the size classes is larger) loses cells it would get without the poisoning."""
    path, stacked = halves
    connect = next(stacked)
    try:
        attacker = connect()
        for start in range(len(INDUSTRIES) - 9):
            attacker.query(GRANT, "SELECT SUM(revenue) FROM tax.declarations WHERE "
                           + _codes(INDUSTRIES[start:start + 10]))
        attacker.query(GRANT, "SELECT size_class, SUM(revenue) FROM tax.declarations GROUP BY size_class")
        rows = connect("xuanwu-tjj").query(SECOND, honest).rows
    finally:
        stacked.close()
    withheld = [row[:-1] for row in rows if row[-1] is None]
    assert not withheld, f"{len(withheld)} of {len(rows)} safe industry cells withheld: {withheld}"
