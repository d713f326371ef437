"""GROUPING() with ROLLUP: which level a row of totals is, computed by the sandbox from the row's level.

``GROUPING(street_code, size_class)`` is 0 for a cell, 1 for a street's total, 3 for the grand total: a function
of which keys a row spans, never of the data, and exactly what the answer's rolled-up marks already say. So it
is computed after disclosure control from the cell table's own GROUPING column (the engine never sees the
caller's), it is a key-like output (shown beside a withheld row's marks under ``mark``, gone with the row under
``drop``), and it tells a group whose key is NULL from a total, as the marks do. The guard's fixtures pin the plan
(tests/fixtures/guard/rewrites_marked.sql), the values against DuckDB's own GROUPING in both suppression modes
(accepted.sql) and the refusals (GROUPING without ROLLUP, of anything but its keys).
"""

from __future__ import annotations

import dataclasses

import pytest

from dsbroker.guard import guard
from sandbox.disclosure.release import run
from tests.conftest import GRANT, XUANWU, sized_engine

SQL = ("SELECT street_code, size_class, GROUPING(street_code) AS streets, GROUPING(street_code, size_class) AS level, "
       "SUM(revenue) AS revenue FROM tax.declarations GROUP BY ROLLUP (street_code, size_class) ORDER BY level, 1, 2")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # A's small class (3 taxpayers) is withheld with a sibling; B has a group whose size class is NULL.
    sizes = {("A", "large"): 30, ("A", "small"): 3, ("A", "micro"): 20, ("B", "large"): 12, ("B", "none"): 25}
    yield from sized_engine(tmp_path_factory.mktemp("grouping"), sizes)


def _released(engine, totals_policy, suppression):
    grant = dataclasses.replace(totals_policy, suppression=suppression)
    return run(engine, guard(SQL, grant, district=XUANWU, department="xuanwu-fgw"), timeout_s=10, max_rows=100)


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_grouping_is_the_level_the_answer_marks_rolled_up(engine, totals_policy, suppression):
    released = _released(engine, totals_policy, suppression)
    assert released.names == ["street_code", "size_class", "streets", "level", "revenue"]
    for row, spans in zip(released.rows, released.rolled_up, strict=True):
        assert row[2] == (0 in spans) and row[3] == 2 * (0 in spans) + (1 in spans)
    levels = {(row[0], row[1], row[3]) for row in released.rows}
    assert ("B", None, 0) in levels and ("B", None, 1) in levels  # B's NULL size class, and B's total
    assert [row[3] for row in released.rows] == sorted(row[3] for row in released.rows)  # ORDER BY level


def test_a_withheld_row_keeps_its_level_under_mark_and_goes_whole_under_drop(engine, totals_policy):
    marked, dropped = (_released(engine, totals_policy, mode) for mode in ("mark", "drop"))
    withheld = [row for row, cells in zip(marked.rows, marked.withheld, strict=True) if cells]
    assert {(row[0], row[1]) for row in withheld} >= {("A", "small"), ("A", "micro")}
    assert all(row[3] == 0 and row[4] is None for row in withheld if row[1] is not None)
    kept = [row for row, cells in zip(marked.rows, marked.withheld, strict=True) if not cells]
    assert [tuple(row) for row in dropped.rows] == [tuple(row) for row in kept] and not any(dropped.withheld)


def test_grouping_over_the_wire_matches_the_rolled_up_marks(totals_client):
    result = totals_client.query(GRANT, "SELECT street_code, industry_section, GROUPING(street_code, "
                                        "industry_section) AS level, SUM(vat_paid) AS vat FROM tax.declarations "
                                        "WHERE industry_section IN ('C', 'F') GROUP BY ROLLUP (street_code, "
                                        "industry_section) ORDER BY 1, 2")
    assert result.rows and {row[2] for row in result.rows} == {0, 1, 3}
    for r, row in enumerate(result.rows):
        assert row[2] == 2 * ((r, 0) in result.rolled_up) + ((r, 1) in result.rolled_up)
        assert (r, 2) not in result.withheld  # a level is never withheld: it is no cell
