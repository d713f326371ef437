"""Findings of a third outside review of the guard and the sandbox's release, each a regression test.

Each test fails on the code it was written against (branch attack3, from 442bc6c) and says, in a comment
and its docstring, how severe it is and how the attack works. As in the earlier rounds, most compare two
neighbouring databases that differ only in what the released cells do not say (one taxpayer's existence
or amount inside a withheld cell): a query must succeed on both or on neither, and answer the same on both.

The attacker is the shipped grant's requester (xuanwu-fgw, ``suppressed: mark``, k = 10, no dominance
rule), except where a test says which documented grant option it also needs. The tests run the guard
and the sandbox's own release code (``sandbox.disclosure.release``, ``sandbox.disclosure.encryption``)
on real DuckDB files, as the servicer does.
"""

from __future__ import annotations

import datetime as dt

import pytest

from dsbroker.errors import DsbrokerError
from dsbroker.policy.model import Dominance
from sandbox.disclosure.encryption import encrypted_release
from sandbox.disclosure.release import run
from tests.neighbours import JAN, guarded_for, outcome, street




# -- 1. totals: a sum withheld by the contributor rule is its total less its released siblings ------------
#
# Severity: HIGH. One taxpayer's exact amount, from one query the shipped grant accepts, no differencing
# across queries, no dominance rule needed.
# Attack: SELECT street_code, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations
#         GROUP BY ROLLUP (street_code)
# In street A (12 taxpayers) one alone declares CIT: A's SUM(cit_paid) is withheld (1 contributor < k),
# the rest of A's row and every other street are released, and so is the district total (13 contributors).
# total.cit - B.cit = A-0's CIT, to the fen.

def released_cit(released, keys: tuple) -> dict:
    """The CIT (output 2) of each row of a ROLLUP answer that releases it, by its keys (a total's as None)."""
    return {tuple(row[:len(keys)]): row[2]
            for row, marks in zip(released.rows, released.withheld, strict=True) if 2 not in marks}


def cit_rows(engines, name: str, amount: int):
    """Streets A and B of 12 taxpayers each: in A only A-0 declares CIT (``amount``), in B everyone (5)."""
    return engines(name, street("A", 12) + street("B", 12),
                   "UPDATE tax.declarations SET cit_paid = 5 WHERE street_code = 'B'",
                   f"UPDATE tax.declarations SET cit_paid = {amount} WHERE taxpayer_id = 'A-0'")


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_a_sum_withheld_for_too_few_contributors_is_not_its_total_less_its_siblings(engines, totals_policy,
                                                                                   suppression):
    """release() runs secondary suppression (``_secondary``) on the cells under the threshold only
    (``under``: fewer than k entities). The contributor rule (``Layout.hidden_by_contributors``) withholds a
    single SUM inside a cell of k or more taxpayers afterwards, row by row, and nothing adds it to the
    equations: the total and the siblings of that sum stay released. So in a ROLLUP the equation
    ``total = sum of parts`` for that measure has exactly one unknown, the lone contributor's amount
    (here total 123,516 less B's 60 is A-0's 123,456)."""
    sql = ("SELECT street_code, COUNT(*) AS c, SUM(cit_paid) AS cit FROM tax.declarations "
           "GROUP BY ROLLUP (street_code)")
    guarded = guarded_for(sql, totals_policy, suppression=suppression)
    released = run(cit_rows(engines, "db", 123_456), guarded, timeout_s=30)
    cit = released_cit(released, (0,))
    assert ("A",) not in cit, "A's CIT, one taxpayer's, is withheld by the contributor rule"
    # A's CIT is the total's less B's whenever both are released.
    assert not ((None,) in cit and ("B",) in cit), (released.rows, released.withheld)


def test_a_sum_withheld_for_too_few_contributors_is_not_a_two_level_total_less_its_parts(engines, totals_policy):
    """The same with two ROLLUP keys: A's CIT is withheld in (A, small) and in (A, total), yet the district
    total less B's total is A's lone payer's amount."""
    sql = ("SELECT street_code, size_class, SUM(cit_paid) AS cit, COUNT(*) AS c FROM tax.declarations "
           "GROUP BY ROLLUP (street_code, size_class)")
    guarded = guarded_for(sql, totals_policy)
    released = run(cit_rows(engines, "db", 123_456), guarded, timeout_s=30)
    cit = released_cit(released, (0, 1))
    assert ("A", None) not in cit and ("A", "small") not in cit
    assert not ((None, None) in cit and ("B", None) in cit), (released.rows, released.withheld)


# Variants of the same class found while fixing it: a sum withheld by the dominance rule (refused with
# totals), and two cells each withheld for itself whose sum is their total less its released part (failed first).

def test_a_sum_withheld_by_the_dominance_rule_is_never_next_to_its_total(policy):
    """A dominated sum would be its total less its released siblings (street A's revenue one firm's, the
    district's less B's); a grant with a dominance rule refuses totals before any data is read
    (``reject_invalid_totals``), and the release withholds such sums' siblings too (``_secondary_sums``)."""
    sql = ("SELECT street_code, COUNT(*) AS c, SUM(revenue) AS revenue FROM tax.declarations "
           "GROUP BY ROLLUP (street_code)")
    with pytest.raises(DsbrokerError) as refused:
        guarded_for(sql, policy, dominance=Dominance(n=1, k=85.0))
    assert refused.value.reason == "TOTALS_NOT_ALLOWED"
    assert refused.value.metadata["rule"] == "reject_invalid_totals"


def test_two_cells_under_the_threshold_are_not_their_total_less_its_released_part(engines, totals_policy):
    """A-0 alone declares in February and March in a street of 12: (A, Feb) and (A, Mar) are withheld
    (one taxpayer each), so no single cell is one subtraction away; but A's total less (A, Jan) is their
    sum, A-0's two months."""
    lone = [("A-0", dt.date(2025, month, 1), "A", 7_000 + month, 10) for month in (2, 3)]
    sql = ("SELECT street_code, period, COUNT(*) AS c, SUM(revenue) AS revenue FROM tax.declarations "
           "GROUP BY ROLLUP (street_code, period)")
    released = run(engines("db", street("A", 12) + street("B", 12) + lone), guarded_for(sql, totals_policy),
                   timeout_s=30)
    shown = {tuple(row[:2]): row[3] for row, marks in zip(released.rows, released.withheld, strict=True) if not marks}
    assert ("A", dt.date(2025, 2, 1)) not in shown and ("A", dt.date(2025, 3, 1)) not in shown
    assert not (("A", None) in shown and ("A", JAN) in shown), (released.rows, released.withheld)


# -- 2. date literals in Unicode digits: the lazy engine cast is an existence oracle again ---------------
#
# Severity: HIGH. The first review's existence oracle (test_attack_findings.py, finding 1) reopened under
# the shipped grant: yes/no on whether a withheld cell (one taxpayer) has a declaration, one bit a query,
# answered as EXECUTION_FAILED (INTERNAL). With a gridded measure range (grant option ``ranges``) it reads
# a lone taxpayer's band.
# Attack: SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' AND period = '２０２５-01-01'
# (full-width digits; Arabic-Indic '٠' and the like work too; or a timestamp literal ending in a newline,
# TIMESTAMP '2025-01-01 00:00\n'). Fails iff street X has a row. Under noise it is the same exact bit (the
# epsilon it spends does not bound an error that is certain).

@pytest.mark.parametrize("condition", [
    "period = '２０２５-01-01'",  # FULLWIDTH DIGITs
    "period = DATE '2025-٠1-01'",  # ARABIC-INDIC DIGIT ZERO
    "period BETWEEN '2025-01-01' AND '2025-0１-31'",
    "date_trunc('month', period) = '2025-01-01 0０:00'",  # the timestamp form
    "period = TIMESTAMP '2025-01-01 00:00:00.１'",
    # ``$`` also matches before a trailing newline: DuckDB reads the rest of a timestamp as a time zone
    "period = TIMESTAMP '2025-01-01 00:00\n'",
    "date_trunc('month', period) = '2025-01-01 00:00\n'",
])
def test_a_date_literal_in_unicode_digits_is_no_existence_oracle(engines, policy, condition):
    """dsbroker.guard.literals reads dates with ``re`` patterns written with ``\\d``, which in Python matches
    every Unicode decimal digit, and ``int('２０２５')`` is 2025: the guard (reject_mistyped_filters for
    text, reject_unsupported_syntax for ``DATE '...'``) accepts the literal as a real date. DuckDB reads
    ASCII digits only and, as the first review found, casts the literal row by row after the other
    conjuncts. So the query fails (EXECUTION_FAILED) if and only if some row of the caller's district passes
    ``street_code = 'X'``, while the answer it would give (one cell, withheld either way) says nothing.
    The literal should be refused before any data is read (``[0-9]``, or ``re.ASCII``). The same patterns
    end in ``$``, which also matches before a final newline: ``TIMESTAMP '2025-01-01 00:00\\n'`` is read by
    the guard and fails in DuckDB (a timestamp "that is not UTC") row by row in the same way (``\\Z`` or
    ``fullmatch`` would not)."""
    sql = f"SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' AND {condition}"
    try:
        guarded = guarded_for(sql, policy)
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")  # a refusal before any data is read
        return
    base = street("A", 12) + street("B", 12)
    absent, present = engines("absent", base), engines("present", base + street("X", 1))
    assert outcome(absent, guarded) == outcome(present, guarded)


def test_a_measure_range_with_a_unicode_digit_date_does_not_read_a_lone_taxpayers_band(engines, policy):
    """With a gridded measure range in the conjunction (ranges: employees, grid 50) the same error says
    whether street X's lone taxpayer declares between 0 and 49 employees: here 30 or 70."""
    sql = ("SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' AND employees BETWEEN 0 AND 49 "
           "AND period = '２０２５-01-01'")
    try:
        guarded = guarded_for(sql, policy, ranges={"employees": 50})
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")
        return
    found = {employees: outcome(engines(f"band-{employees}", street("A", 12) + street("X", 1),
                                        f"UPDATE tax.declarations SET employees = {employees} "
                                        "WHERE street_code = 'X'"), guarded)
             for employees in (30, 70)}
    assert found[30] == found[70], found


# -- 3. encrypted mode: the engine's released-first order ignores the contributor rule -------------------
#
# Severity: LOW (correctness of the cut and of ``truncated``; the claim "which groups come back, and whether
# the answer is truncated, depends on released groups alone"). Needs a grant with ``results: [encrypted]``.
# Attack: SELECT street_code, SUM(cit_paid) AS cit FROM tax.declarations GROUP BY street_code, encrypted,
# with the groups at the cap: a street whose CIT only one taxpayer pays takes a place in the engine's cut
# (it has k taxpayers, so it sorts among the released) and is then left out by the sandbox.

def test_an_encrypted_answer_cut_at_the_cap_is_not_shortened_by_a_group_withheld_for_few_contributors(
        engines, encrypted_policy):
    """split_cells orders the encrypted cell query by ``COUNT(DISTINCT entity) >= k DESC`` so that small
    groups cannot take the places the cap leaves, and the sandbox takes max_rows + 1 rows. But
    encrypted_release also leaves out whole a group whose sum fewer than k taxpayers make up
    (``hidden_by_contributors``), which that order does not see. With a cap of 2 and streets A to D of 12
    taxpayers each, where B's CIT is paid by one taxpayer alone: the engine returns A, B, C; the sandbox
    drops B and answers A and C, *not truncated*, although D is a released group that was cut. Without B's
    peculiarity the answer is A, B and truncated. The answer must be the first released groups and must
    say truthfully whether more exist."""
    granted = dict(results=("aggregate", "encrypted"), max_groups=2)
    sql = "SELECT street_code, SUM(cit_paid) AS cit FROM tax.declarations GROUP BY street_code"
    guarded = guarded_for(sql, encrypted_policy, encrypted=True, **granted)
    engine = engines("db", street("A", 12) + street("B", 12) + street("C", 12) + street("D", 12),
                     "UPDATE tax.declarations SET cit_paid = 5 WHERE street_code <> 'B' OR taxpayer_id = 'B-0'")
    # As the sandbox runs it: one row past the cap, the released groups first.
    result = engine.execute(guarded.sql, timeout_s=30, max_rows=guarded.max_rows + 1)
    release = encrypted_release(result.names, result.types, result.rows, guarded, partitions=1,
                                dataset="tax.declarations")
    assert release.keys == (("A",), ("C",))
    assert release.truncated, "street D is released but was cut, and the answer says it is complete"
