"""Findings of a seventh outside review, of secondary suppression for ROLLUP (4fa4c63: ``_Equations.close``
with ``weakest_opened`` and the strength rule, ``_secondary_sums`` with the count of negative amounts),
each a regression test.

Each test fails on the code it was written against (branch attack7, from 23db9a6) and says, in a comment
and its docstring, how severe it is and how the attack works. The attacker is the shipped grant's
requester (xuanwu-fgw, k = 10, no dominance rule): one query, GROUP BY ROLLUP, and the released cells of
that one answer. The tests run the guard and the sandbox's own release code (``sandbox.disclosure.release``) on real
DuckDB files, as the servicer does.

What a reader of one answer can derive, in general: for a released cell d, d less the released cells
below it that no other released cell lies between (its "released frontier") is the sum of the withheld
leaves reachable from d through withheld cells only. Every such sum must be made up by k taxpayers or
none. Both findings are such sums that ``close`` does not bound.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox.disclosure.release import run
from tests.neighbours import guarded_for


@pytest.fixture(scope="module")
def policy(totals_policy):
    """The grant these findings are of: the shipped one without a dominance rule (a test-only variant),
    since the rule refuses totals (ROLLUP) outright."""
    return totals_policy


JAN, FEB, MAR, APR, MAY = (dt.date(2025, month, 1) for month in (1, 2, 3, 4, 5))


def released_column(released, keys: int, column: int) -> dict:
    """Output ``column`` of each row of a ROLLUP answer that releases it, by its keys (a total's as None)."""
    return {tuple(row[:keys]): row[column] for row, marks in zip(released.rows, released.withheld, strict=True)
            if column not in marks}


# -- 1. a released total whose parts are all withheld is checked only where a part opens directly; a part
#       that opens through its own part (two levels down) is never looked at ---------------------------
#
# Severity: HIGH. One taxpayer's exact amount (its CIT over four declarations), from one query the shipped
# grant accepts, under `mark` and `drop`.
# Attack: SELECT street_code, size_class, period, COUNT(*) AS c, SUM(cit_paid) AS cit
#         FROM tax.declarations GROUP BY ROLLUP (street_code, size_class, period)
# Street A, large: (A, large, Jan) is X alone; (A, large, Feb) is X and 11 firms paying no CIT;
# (A, large, Mar) is 20 firms paying 7 each. Street A, small: (A, small, Apr) is X and 2 others. Street B:
# (B, large, May) is X and 2 others. X alone pays CIT outside March. The whole-row pass withholds
# (A, large, Jan), then (A, large, Feb) beside it (12 taxpayers), (A, large) beside (A, small), and A
# beside B; the district's parts (A, B) are then all withheld, and neither has a released part of its own
# (A's parts (A, large) and (A, small) are withheld too), so ``weakest_opened`` finds nothing to open and
# lets the district's equation pass. The CIT pass inherits it. But (A, large, Mar), two levels below A, is
# released: the district less (A, large, Mar) is every other cell's CIT, all X's.

def lone_payer_under_two_withheld_levels(engines, name: str, amount: int):
    rows = ([("X", JAN, "A", 1, 10), ("X", FEB, "A", 1, 10)] + [(f"F-{n}", FEB, "A", 1, 10) for n in range(11)]
            + [(f"M-{n}", MAR, "A", 1, 10) for n in range(20)]
            + [("X", APR, "A", 2, 10)] + [(f"S-{n}", APR, "A", 2, 10) for n in range(2)]
            + [("X", MAY, "B", 1, 10)] + [(f"B-{n}", MAY, "B", 1, 10) for n in range(2)])
    return engines(name, rows, "UPDATE tax.declarations SET size_class = CASE WHEN revenue = 2 THEN 'small' "
                               "ELSE 'large' END",
                   "UPDATE tax.declarations SET cit_paid = 7 WHERE taxpayer_id LIKE 'M-%'",
                   f"UPDATE tax.declarations SET cit_paid = {amount} WHERE taxpayer_id = 'X'")


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_a_total_whose_parts_are_all_withheld_is_checked_for_parts_that_open_further_down(engines, policy,
                                                                                          suppression):
    """``weakest_opened`` counts a part as one that can be opened only if one of *its own* parts is released
    or known (``held_parts[part] < len(inner)``), and returns infinity where none is: the equation of a
    released total whose parts are all withheld then always holds. A part whose parts are all withheld can
    still be opened through a part of theirs: here A = (A, large) + (A, small), (A, large) = its January,
    February and March, and March is released. The district less (A, large, Mar) is (A, large, Jan) +
    (A, large, Feb) + (A, small) + B, whose CIT only X pays. The check must reach every withheld level
    below a released total (a lower bound there: the largest strength of a withheld cell the opening
    leaves, as ``strongest`` is for a part that opens directly)."""
    sql = ("SELECT street_code, size_class, period, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations "
           "GROUP BY ROLLUP (street_code, size_class, period)")
    guarded = guarded_for(sql, policy, suppression=suppression)
    found = {}
    for amount in (1_000, 2_345):
        released = run(lone_payer_under_two_withheld_levels(engines, f"db-{amount}", amount), guarded,
                       timeout_s=30)
        cit = released_column(released, 3, 4)
        assert ("A", "large", JAN) not in cit and ("B", None, None) not in cit, "X's cells are withheld"
        if (None, None, None) in cit and ("A", "large", MAR) in cit:
            found[amount] = cit[(None, None, None)] - cit[("A", "large", MAR)]
    assert not found, found  # {1000: 4000, 2345: 9380}: X's CIT in its four declarations


# -- 2. a withheld total's strength falls when its first part is withheld, but the totals above keep the
#       old, larger value -------------------------------------------------------------------------------
#
# Severity: MEDIUM. One taxpayer's exact amount in one query, where nine others' payments in one street
# cancel against their refunds in another (the negative amounts ``_secondary_sums`` subtracts for).
# Attack: SELECT street_code, period, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations
#         GROUP BY ROLLUP (street_code, period)
# Street A: in January 10 firms paying no CIT; in February C-0..C-8 pay 5 each, Y pays its CIT and W pays
# none (11 taxpayers, 10 contributors); in March 12 firms pay 7. Street B: in January C-0..C-8 are
# refunded their 5 (9 taxpayers: under the threshold). Street C: 40 firms paying 7. The whole-row pass
# withholds B, then A beside it (fewer taxpayers than C), then (A, Jan) in A. In the CIT pass (A, Jan) is
# known (no contributor), so A is withheld with no withheld part: its strength is its size, 22 - 9 = 13,
# and the district's strongest withheld part is 13. A's own equation then withholds (A, Feb) (size
# 10 - 9 = 1) and A's strength falls to 1, but ``withhold`` raises ``strongest`` with ``max`` only: the
# district's stays 13 >= k and its equation holds. The district less C less (A, Mar) is (A, Feb) + B:
# the nine payments and refunds cancel, and what is left is Y's CIT.

def refunds_in_another_street(engines, name: str, amount: int):
    rows = ([(f"Z-{n}", JAN, "A", 1, 10) for n in range(10)]
            + [(f"C-{n}", FEB, "A", 1, 10) for n in range(9)] + [("Y", FEB, "A", 1, 10), ("W", FEB, "A", 1, 10)]
            + [(f"M-{n}", MAR, "A", 1, 10) for n in range(12)]
            + [(f"C-{n}", JAN, "B", 1, 10) for n in range(9)]
            + [(f"Q-{n}", JAN, "C", 1, 10) for n in range(40)])
    return engines(name, rows, "UPDATE tax.declarations SET cit_paid = 7 "
                               "WHERE taxpayer_id LIKE 'M-%' OR taxpayer_id LIKE 'Q-%'",
                   "UPDATE tax.declarations SET cit_paid = 5 WHERE taxpayer_id LIKE 'C-%' AND street_code = 'A'",
                   "UPDATE tax.declarations SET cit_paid = -5 WHERE taxpayer_id LIKE 'C-%' AND street_code = 'B'",
                   f"UPDATE tax.declarations SET cit_paid = {amount} WHERE taxpayer_id = 'Y'")


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_a_withheld_totals_lowered_strength_reaches_the_totals_above_it(engines, policy, suppression):
    """``close`` sets a withheld total's strength to its size while none of its parts is withheld, and the
    strongest of its parent's withheld parts from that. When its first part is withheld, ``withhold``
    lowers the total's strength to min(size, the part's strength), but then updates the parent with
    ``strongest[parent] = max(strongest[parent], strength[child])``, which never falls: the parent keeps
    the strength of a sum that is no longer what its withheld parts give. Here the district's strongest
    withheld part stays A's 13 while the sum A contributes is (A, Feb), strength 1, and B's is 0; the
    district's equation must be checked with the lowered value (recomputed over the withheld parts)."""
    sql = ("SELECT street_code, period, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations "
           "GROUP BY ROLLUP (street_code, period)")
    guarded = guarded_for(sql, policy, suppression=suppression)
    found = {}
    for amount in (1_000, 2_345):
        released = run(refunds_in_another_street(engines, f"db-{amount}", amount), guarded, timeout_s=30)
        cit = released_column(released, 2, 3)
        assert ("A", FEB) not in cit and ("B", JAN) not in cit
        if (None, None) in cit and ("C", None) in cit and ("A", MAR) in cit:
            found[amount] = cit[(None, None)] - cit[("C", None)] - cit[("A", MAR)]  # (A, Jan)'s CIT is 0
    assert not found, found  # {1000: 1000, 2345: 2345}: Y's February CIT
