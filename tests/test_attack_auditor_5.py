"""Fifth round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works.

They reuse the data of tests/test_released_cell_auditor.py (LONE alone in street A industry 99; LATE alone in
month 24 of street A industry 72) and its ``stack`` fixture (a fresh released-cell ledger, a second department).
"""

from __future__ import annotations

from tests.conftest import GRANT
from tests.test_attack_auditor import _one
from tests.test_released_cell_auditor import LONE, STREET_A, STREET_B, data, stack, _truth  # noqa: F401

SUM = "SELECT SUM(revenue) FROM tax.declarations WHERE "
SECOND = "xuanwu-tjj-2026-001"
YEAR = {2025: "period BETWEEN DATE '2025-01-01' AND DATE '2025-12-01'",
        2026: "period BETWEEN DATE '2026-01-01' AND DATE '2026-12-01'"}
NOT_99 = "industry_code IN ('51', '52', '65', '72')"
IN_99 = "industry_code = '99'"
A, B, BOTH = f"street_code = '{STREET_A}'", f"street_code = '{STREET_B}'", \
    f"street_code IN ('{STREET_A}', '{STREET_B}')"


def lone_change_cells(client, other) -> tuple[list, list]:
    """The six cells (two departments') whose plus less minus is LONE's 2025 revenue less its 2026 revenue."""
    plus = [_one(client, SUM + f"{BOTH} AND {IN_99} AND {YEAR[2025]}"),
            _one(other, SUM + f"{B} AND {NOT_99} AND {YEAR[2025]}", SECOND),
            _one(client, SUM + f"{B} AND {IN_99} AND {YEAR[2026]}"),
            _one(other, SUM + f"{BOTH} AND {NOT_99} AND {YEAR[2026]}", SECOND)]
    minus = [_one(client, SUM + B), _one(other, SUM + f"{A} AND {YEAR[2026]}", SECOND)]
    return plus, minus


def lone_weighted_cells(client, other) -> tuple[list, list]:
    """The four street-A cells whose plus less minus is 2 x LONE's 2025 revenue plus its 2026 revenue."""
    plus = [_one(client, SUM + f"{A} AND industry_code IN ('99', '51') AND {YEAR[2025]}"),
            _one(other, SUM + f"{A} AND industry_code IN ('99', '52', '65', '72') AND {YEAR[2025]}", SECOND),
            _one(client, SUM + f"{A} AND {YEAR[2026]}")]
    minus = [_one(other, SUM + f"{A} AND {NOT_99}", SECOND)]
    return plus, minus


# --- 1. A combination that is no total, of two blocks of one taxpayer ------------------------------------------

def test_one_firms_change_from_one_year_to_the_next_is_not_given_by_a_combination_of_released_cells(data, stack):  # noqa: F811
    """Only *totals* (combinations 1 on each block they take) are judged; "one small cell less another gives no
    set's total and is allowed" (README). That holds when the two small cells are different taxpayers; when both
    are the same one (LONE in street A industry 99, in 2025 and in 2026: blocks split by a period), their
    difference is that taxpayer's exact change from one year to the next, a figure of one firm. Six cells of 12 to
    118 firms, each passing the rules and no total of too few following from them, give it:
    (A,B)x99x2025 - Bxall + Bxnot99x2025 + Bx99x2026 + (A,B)xnot99x2026 - Axallx2026 = LONE 2025 - LONE 2026."""
    plus, minus = lone_change_cells(stack(), stack("xuanwu-tjj"))
    change = _truth(data, f"taxpayer_id = '{LONE}' AND {YEAR[2025]}") - \
        _truth(data, f"taxpayer_id = '{LONE}' AND {YEAR[2026]}")
    released = plus + minus
    assert None in released or sum(plus) - sum(minus) != change, \
        f"LONE's change of revenue from 2025 to 2026 ({change}) is recovered"


# --- 2. Group keys the ledger cannot write -----------------------------------------------------------------

def test_a_group_column_of_time_of_day_is_answered_or_refused_cleanly(data, tmp_path):  # noqa: F811
    """The ledger writes a cell's keys with ``encode_keys``, which knows None, bool, text, int, date, timestamp,
    DECIMAL and DOUBLE, and raises TypeError for anything else; nothing in the guard or the policy limits a group
    column's type. A grant with a TIME group column (the hour a declaration was filed) gets every answer grouped
    by it broken by a TypeError past the audit (after the audit said it may leave), not released nor refused with a
    reason. The TypeError is raised inside the ledger's ``BEGIN IMMEDIATE`` and only sqlite3 errors roll back, so the
    transaction stays open holding the file's write lock: the next exact answer on the sandbox, another
    department's, is refused (RELEASED_CELLS_UNAVAILABLE)."""
    from dsbroker.errors import DsbrokerError
    from tests.test_attack_auditor import Stack
    from tests.test_attack_auditor_4 import _copy

    timed = _copy(data, tmp_path, "timed.duckdb", [
        ("ALTER TABLE tax.declarations ADD COLUMN filed_at TIME DEFAULT TIME '09:00:00'", [])])
    stack_ = Stack(timed, tmp_path, tmp_path / "released.sqlite",
                   edits=[("  size_class: group\n", "  size_class: group\n  filed_at: group\n")])
    try:
        try:
            rows = stack_.client().query(GRANT, "SELECT filed_at, SUM(revenue) FROM tax.declarations "
                                         "GROUP BY filed_at").rows
            broken = None if rows and rows[0][1] is not None else "nothing released"
        except DsbrokerError as error:
            broken = f"{error.reason}: {error}" if error.reason in ("INTERNAL", "", None) else None
        try:
            street = _one(stack_.client("xuanwu-tjj"), SUM + A, SECOND)
            after = None if street is not None else "withheld"
        except DsbrokerError as error:
            after = f"{error.reason}: {error}"
    finally:
        stack_.stop()
    assert after is None, f"the next department's plain street total is refused ({after})"
    assert broken is None, f"the TIME-keyed answer fails with an internal error ({broken})"
