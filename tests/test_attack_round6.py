"""Findings of a sixth outside review, of secondary suppression for ROLLUP (006b732: ``_Equations.close`` with
the strength rule, ``_secondary_sums`` with known zero-contributor cells, ``totals_contributors``), each a
regression test.

Each test fails on the code it was written against (branch attack6, from 006b732) and says, in a comment
and its docstring, how severe it is and how the attack works. The attacker is the shipped grant's
requester (xuanwu-fgw, k = 10, no dominance rule): one query, GROUP BY ROLLUP, and the released cells of
that one answer. The tests run the guard and the sandbox's own release code (``sandbox.disclosure.release``) on real
DuckDB files, as the servicer does.
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


JAN, FEB, MAR = (dt.date(2025, month, 1) for month in (1, 2, 3))


def released_column(released, keys: int, column: int) -> dict:
    """Output ``column`` of each row of a ROLLUP answer that releases it, by its keys (a total's as None)."""
    return {tuple(row[:keys]): row[column] for row, marks in zip(released.rows, released.withheld, strict=True)
            if column not in marks}


# -- 1. a released total whose parts are all withheld is never checked, though a withheld part can be
#       opened through its own released parts ------------------------------------------------------------
#
# Severity: HIGH. One taxpayer's exact amount (its January and February CIT together), from one query the
# shipped grant accepts, under `mark` and `drop`.
# Attack: SELECT period, street_code, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations
#         WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-02-01' GROUP BY ROLLUP (period, street_code)
# January: street A, 12 taxpayers paying CIT; street T, 11 taxpayers paying none (loss-making firms);
# street S, X alone. February: X alone (a late filer; the others file in March). The whole-row pass
# withholds (Jan, S), then (Jan, T) beside it (the fewest taxpayers), then February (X alone) and so
# January as February's sibling. The CIT pass then counts (Jan, T) as known (no contributor) and released,
# so January's equation holds two withheld members (January and (Jan, S)), and the district's has all its
# parts withheld (January, February), which ``close`` never tests. But January is (Jan, A) + (Jan, S) +
# (Jan, T), and (Jan, A) is released: the district's CIT less (Jan, A)'s is (Jan, S) + February + T's
# zero, X's two months to the fen.

def lone_late_filer(engines, name: str, january: int):
    rows = ([(f"A-{n}", month, "A", 100, 10) for n in range(12) for month in (JAN, MAR)]
            + [(f"T-{n}", JAN, "T", 100, 10) for n in range(11)] + [("X", JAN, "S", 100, 10), ("X", FEB, "S", 100, 10)])
    return engines(name, rows, "UPDATE tax.declarations SET cit_paid = 7 WHERE street_code = 'A'",
                   f"UPDATE tax.declarations SET cit_paid = {january} WHERE taxpayer_id = 'X' AND month(period) = 1",
                   "UPDATE tax.declarations SET cit_paid = 1000 WHERE taxpayer_id = 'X' AND month(period) = 2")


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_a_total_whose_parts_are_all_withheld_is_no_cover_for_a_withheld_part_with_released_parts(engines, policy,
                                                                                                suppression):
    """``close`` skips an equation whose total is released when all its parts are withheld
    (``held_parts[total] == len(parts)``): the withheld parts' sum is then the total itself. But a withheld
    part that is a total with released parts may be replaced by its withheld parts (the strength rule's
    own argument): here January by (Jan, S), with (Jan, A) released and (Jan, T) known. The district less
    (Jan, A) is (Jan, S) + February, strength min(23, 1) and 1, both X's. The strength condition must hold
    for a released total whenever one of its withheld parts has released parts of its own (with all its
    parts withheld, as with some)."""
    sql = ("SELECT period, street_code, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations "
           "WHERE period BETWEEN DATE '2025-01-01' AND DATE '2025-02-01' GROUP BY ROLLUP (period, street_code)")
    guarded = guarded_for(sql, policy, suppression=suppression)
    found = {}
    for january in (1_234, 4_321):
        released = run(lone_late_filer(engines, f"db-{january}", january), guarded, timeout_s=30)
        cit = released_column(released, 2, 3)
        assert (JAN, "S") not in cit and (FEB, None) not in cit, "X's cells are withheld"
        if (None, None) in cit and (JAN, "A") in cit:
            found[january] = cit[(None, None)] - cit[(JAN, "A")]  # T's CIT is 0 (it has no contributor)
    assert not found, found  # {1234: 2234, 4321: 5321}: X's January and February CIT


# -- 2. the strength rule counts a cover's contributors, though they cancel in the sum it hides --------
#
# Severity: MEDIUM. One taxpayer's exact amount in one query, where nine others' amounts cancel across the
# two withheld cells (a payment and its refund: the case round 5 made the totals' count guard against).
# Attack: SELECT street_code, period, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations
#         GROUP BY ROLLUP (street_code, period)
# Street A: in January A-0..A-8 pay CIT 5 each (9 taxpayers: under the threshold); in February they are
# refunded their 5 and U, one more taxpayer, pays its CIT (10 taxpayers, 10 contributors); in March 12
# others pay 7. (A, Jan) is withheld and (A, Feb) beside it (the fewest taxpayers, and contributors);
# the strength rule passes A's equation because February has 10 contributors. A's total is released
# (13 taxpayers whose nonzero parts share a sign), and A less March is January + February: the nine
# payments and refunds cancel, and what is left is U's February CIT.

def refund_beside_a_small_month(engines, name: str, amount: int):
    rows = ([(f"A-{n}", month, "A", 100, 10) for n in range(9) for month in (JAN, FEB)] + [("U", FEB, "A", 100, 10)]
            + [(f"M-{n}", MAR, "A", 100, 10) for n in range(12)] + [(f"B-{n}", JAN, "B", 100, 10) for n in range(12)])
    return engines(name, rows, "UPDATE tax.declarations SET cit_paid = 7",
                   "UPDATE tax.declarations SET cit_paid = 5 WHERE street_code = 'A' AND month(period) = 1",
                   "UPDATE tax.declarations SET cit_paid = -5 WHERE street_code = 'A' AND month(period) = 2",
                   f"UPDATE tax.declarations SET cit_paid = {amount} WHERE taxpayer_id = 'U'")


def test_a_derived_sum_of_withheld_cells_counts_only_taxpayers_whose_amounts_do_not_cancel(engines, policy):
    """``close``'s second condition bounds the withheld parts' sum below by its strongest member's count of
    contributors (February's 10). That counts distinct taxpayers, not taxpayers whose amount *in the sum*
    is not zero: an entity in several withheld parts adds its parts, and A-0..A-8's January payments and
    February refunds add to nothing. The same reason made ``totals_contributors`` count at a total only the
    entities whose nonzero parts share a sign; the withheld parts' sum (A less March) is a total too, of
    one taxpayer, U. A cover whose contributors cancel with the primary's must not count as covering k."""
    sql = ("SELECT street_code, period, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations "
           "GROUP BY ROLLUP (street_code, period)")
    guarded = guarded_for(sql, policy)
    found = {}
    for amount in (1_234, 4_321):
        cit = released_column(run(refund_beside_a_small_month(engines, f"db-{amount}", amount), guarded,
                                  timeout_s=30), 2, 3)
        assert ("A", JAN) not in cit and ("A", FEB) not in cit
        if ("A", None) in cit and ("A", MAR) in cit:
            found[amount] = cit[("A", None)] - cit[("A", MAR)]
    assert not found, found  # {1234: 1234, 4321: 4321}: U's February CIT


# -- 3. the equations of a million-cell ROLLUP are built without looking at the deadline -----------------
#
# Severity: LOW (availability; no value is disclosed). A query whose engine part used up its time still
# holds a sandbox worker, and the GIL, for about 7 s more per million cells (the cap) on this machine.
# Attack: SELECT industry_code, street_code, period, COUNT(*) AS c, SUM(vat_paid) AS vat, ... FROM
#         tax.declarations GROUP BY ROLLUP (industry_code, street_code, period) over ~1,000,000 cells.

def test_a_million_cell_rollup_stops_near_its_deadline(engines, policy):
    """``_Equations.__init__`` (per row: its order, its level, its parent; per equation: its sorted parts)
    and ``close``'s set-up (a heap per equation) run before ``check`` is first called, about 5-9 s for
    931,001 cells here, whatever the deadline; the final sort of the answer (``_order``) is not checked
    either. With half a second left, release() refuses QUERY_TIMEOUT only some 7 s later. The table is the
    engine's layout for the query, with made-up statistics (many cells under the threshold)."""
    import random
    import time

    from dsbroker.errors import DsbrokerError
    from sandbox.disclosure.release import release

    sql = ("SELECT industry_code, street_code, period, COUNT(*) AS c, SUM(vat_paid) AS vat, SUM(cit_paid) AS cit "
           "FROM tax.declarations GROUP BY ROLLUP (industry_code, street_code, period)")
    guarded = guarded_for(sql, policy)
    engine = engines("db", [(f"A-{n}", JAN, "A", 100, 10) for n in range(12)])
    layout = engine.execute(guarded.sql, timeout_s=30, max_rows=1_000)
    width = len(layout.names)
    at = {name: i for i, name in enumerate(layout.names)}
    rng = random.Random(1)
    periods = [dt.date(2000 + p // 12, p % 12 + 1, 1) for p in range(30)]

    def cell(keys, bits, entities):
        row = [None] * width
        for i, key in enumerate(keys):
            row[at[f"__k{i}"]] = key
        for name, i in at.items():
            if name.startswith("__s"):
                row[i] = entities
            elif name.startswith("__c"):
                row[i] = rng.choice([0, entities, max(1, entities // 2), 3])
        row[at["__grouping"]] = bits
        return tuple(row)

    rows = []
    for i in range(1_000):
        for s in range(30):
            entities = [rng.choice([1, 3, 9, 10, 12, 20]) for _ in periods]
            rows.extend(cell((f"i{i}", f"s{s}", p), 0, e) for p, e in zip(periods, entities, strict=True))
            rows.append(cell((f"i{i}", f"s{s}", None), 1, sum(entities)))
        rows.append(cell((f"i{i}", None, None), 3, 500))
    rows.append(cell((None, None, None), 7, 100_000))
    started = time.monotonic()
    outcome = "answered"
    try:
        release(layout.names, layout.types, rows, guarded, deadline=started + 0.5)
    except DsbrokerError as error:
        outcome = error.reason
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"{outcome} after {elapsed:.1f} s against a 0.5 s deadline"  # generous: a loaded machine
