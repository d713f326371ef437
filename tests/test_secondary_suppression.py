"""Secondary suppression: with totals (GROUP BY ROLLUP), no withheld cell is a total less its released
parts, nor a total the sum of released parts; checked on hand-made tables, on random hierarchies, and end
to end on crafted data in both suppression modes."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsbroker.guard import GuardedQuery, guard
from dsbroker.guard import internal_names as names
from dsbroker.guard.release_plan import CellPlan, Key, Output, Stat, Statistic
from sandbox.disclosure.release import release, run
from tests.conftest import GRANT, XUANWU, sized_engine

K = 10
# The cell table of a ROLLUP(street, size) with one statistic besides the count of entities: its rows.
NAMES = [names.key(0), names.key(1), names.statistic(0), names.statistic(1), names.GROUPING]
TYPES = ["VARCHAR", "VARCHAR", "BIGINT", "BIGINT", "INTEGER"]
TWO_LEVELS = GuardedQuery(
    sql="", dataset="tax.declarations", entity="taxpayer_id", min_entities=K, max_rows=100,
    cells=CellPlan(keys=2, statistics=(Statistic("entities"), Statistic("rows")),
                   outputs=(Output("street", Key(0), False), Output("size", Key(1), False),
                            Output("total", Stat(1), True)),
                   totals=(0, 1), whole_table=True))


def table(cells: dict[tuple[str, str], int]) -> list[tuple]:
    """The rows a ROLLUP(street, size) returns over cells {(street, size): taxpayers}, one unit of total each:
    (street, size, entities, total, grouping); the test reads the entities at [2] and the total at [3]."""
    rows = [(street, size, n, n, 0) for (street, size), n in cells.items()]
    for street in sorted({street for street, _ in cells}):
        n = sum(v for (s, _), v in cells.items() if s == street)
        rows.append((street, None, n, n, 1))
    n = sum(cells.values())
    rows.append((None, None, n, n, 3))
    return rows


def equations(rows: list[tuple]) -> list[list[int]]:
    """Each total with the rows it adds up, as row indexes (independent of the code under test)."""
    found = []
    for index, row in enumerate(rows):
        if row[4] == 3:
            found.append([index] + [i for i, r in enumerate(rows) if r[4] == 1])
        elif row[4] == 1:
            found.append([index] + [i for i, r in enumerate(rows) if r[4] == 0 and r[0] == row[0]])
    return found


def only_small(rows: list[tuple], index: int, marks: dict[tuple, bool]) -> bool:
    """Whether withheld row ``index`` is under the threshold, or a street whose withheld size classes all are
    (then it less its released classes is a sum of small cells only)."""
    row = rows[index]
    if row[2] < K:
        return True
    if row[4] != 1:
        return False
    held = [r for r in rows if r[4] == 0 and r[0] == row[0] and marks[r[:2]]]
    return bool(held) and all(r[2] < K for r in held)


def test_two_small_cells_take_a_released_sibling_with_them():
    # (A, small) and (A, micro) are under the threshold: A's total less (A, large) would be their sum.
    rows = table({("A", "large"): 30, ("A", "small"): 3, ("A", "micro"): 4, ("B", "large"): 40})
    released = release(NAMES, TYPES, rows, TWO_LEVELS)
    withheld = {(row[0], row[1]) for row, cells in zip(released.rows, released.withheld, strict=True) if cells}
    assert {("A", "small"), ("A", "micro")} <= withheld
    assert ("A", "large") in withheld or ("A", None) in withheld


def withheld_by_key(released) -> dict[tuple, bool]:
    """Whether each row of a released ROLLUP, by its (street, size), is withheld (the rows come sorted)."""
    return {tuple(row[:2]): bool(cells) for row, cells in zip(released.rows, released.withheld, strict=True)}


def test_one_small_cell_takes_its_smallest_sibling_with_it():
    rows = table({("A", "large"): 30, ("A", "small"): 3, ("A", "micro"): 20, ("A", "medium"): 15})
    released = release(NAMES, TYPES, rows, TWO_LEVELS)
    withheld = {(row[0], row[1]) for row, cells in zip(released.rows, released.withheld, strict=True) if cells}
    assert withheld == {("A", "small"), ("A", "medium")}  # medium: the fewest taxpayers of the rest
    assert released.counts == {"min_entities": 1, "dominance": 0, "secondary": 1, "audit": 0}
    assert all(row[2] is None for row, cells in zip(released.rows, released.withheld, strict=True) if cells)
    assert released.names == ["street", "size", "total"]
    assert released.rolled_up[-1] == {0, 1} and released.rolled_up[0] == set()


def test_a_lone_part_takes_its_total_and_the_total_its_sibling():
    # Street B has one size class only: its subtotal equals it, so the subtotal goes too, and then
    # one of the other streets' subtotals, or the grand total would give B away.
    rows = table({("A", "large"): 30, ("A", "small"): 40, ("B", "small"): 4, ("C", "large"): 25, ("C", "micro"): 50})
    released = release(NAMES, TYPES, rows, TWO_LEVELS)
    withheld = {(row[0], row[1]) for row, cells in zip(released.rows, released.withheld, strict=True) if cells}
    assert {("B", "small"), ("B", None)} <= withheld and len(withheld) >= 4
    marks = withheld_by_key(released)
    for members in equations(rows):
        assert sum(marks[rows[i][:2]] for i in members) != 1


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.tuples(st.sampled_from("ABCDE"), st.sampled_from(["large", "medium", "small", "micro"])),
                       st.integers(1, 40), min_size=1, max_size=20))
def test_no_withheld_cell_is_one_subtraction_away_in_any_table(cells):
    rows = table(cells)
    released = release(NAMES, TYPES, rows, TWO_LEVELS)
    marks = withheld_by_key(released)
    for members in equations(rows):
        assert sum(marks[rows[i][:2]] for i in members) != 1, (members, released.withheld)
    for total, *parts in equations(rows):  # a released total less its released parts: a sum of small cells?
        held = [i for i in parts if marks[rows[i][:2]]]
        if marks[rows[total][:2]] or not held or len(held) == len(parts):
            continue
        assert not all(only_small(rows, i, marks) for i in held), (rows[total], released.withheld)
    answered = {tuple(row[:2]): row for row in released.rows}
    for original in rows:
        under = original[2] < K
        assert marks[original[:2]] or (not under and answered[original[:2]][2] == original[3])
        assert not under or marks[original[:2]]  # every cell under the threshold stays withheld


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    sizes = {("A", "large"): 30, ("A", "small"): 3, ("A", "micro"): 20, ("B", "large"): 12, ("B", "small"): 25}
    yield from sized_engine(tmp_path_factory.mktemp("secondary"), sizes)


@pytest.mark.parametrize("suppression", ["mark", "drop"])
def test_end_to_end_the_totals_give_no_withheld_cell_away(engine, totals_policy, suppression):
    grant = dataclasses.replace(totals_policy, suppression=suppression)
    guarded = guard("SELECT street_code, size_class, SUM(revenue) AS revenue, COUNT(*) AS n FROM tax.declarations "
                    "GROUP BY ROLLUP (street_code, size_class) ORDER BY 1, 2", grant, district=XUANWU,
                    department="xuanwu-fgw")
    result = engine.execute(guarded.sql, timeout_s=10, max_rows=100)
    released = run(engine, guarded, timeout_s=10, max_rows=100)
    shown = {(row[0], row[1]): row[2:] for row, cells, spans in zip(released.rows, released.withheld,
                                                                        released.rolled_up, strict=True) if not cells}
    # A's small class (3 taxpayers) is under the threshold, and its smallest sibling (micro) goes with it.
    assert ("A", "small") not in shown and ("A", "micro") not in shown
    assert shown[("A", None)] == (sum(1_000 + n for n in range(30)) + sum(1_000 + n for n in range(3))
                                  + sum(1_000 + n for n in range(20)), 53)
    assert shown[("A", "large")][1] == 30 and shown[("B", "large")][1] == 12
    # What a reader can subtract: A's subtotal less its released parts is two cells' sum, never one.
    hidden = shown[("A", None)][1] - shown[("A", "large")][1]
    assert hidden == 23 and len([k for k in [("A", "small"), ("A", "micro")] if k not in shown]) == 2
    if suppression == "drop":
        assert len(released.rows) == len(result.rows) - 2 and not any(released.withheld)
    else:
        assert len(released.rows) == len(result.rows) and released.counts["secondary"] == 2


def test_totals_over_the_wire_mark_withheld_cells_and_the_keys_a_total_spans(totals_client, direct, totals_broker):
    # A broker serving the grant without a dominance rule, which refuses totals (conftest.TOTALS).
    result = totals_client.query(GRANT, "SELECT street_code, industry_section, SUM(vat_paid) AS vat "
                                        "FROM tax.declarations WHERE industry_section IN ('C', 'D', 'F') "
                                        "GROUP BY ROLLUP (street_code, industry_section) ORDER BY 1, 2")
    grand = [i for i, row in enumerate(result.rows) if (i, 0) in result.rolled_up]
    assert len(grand) == 1 and (grand[0], 1) in result.rolled_up
    assert result.rows[grand[0]][2] == direct.execute(
        f"SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = '{XUANWU}' "
        "AND industry_section IN ('C', 'D', 'F')").fetchone()[0]
    rules = {rule["rule"]: rule for rule in result.disclosure_rules}
    withheld_rows = {i for i, _ in result.withheld}
    assert rules["min_entities"]["cells_withheld"] + rules["secondary_suppression"]["cells_withheld"] \
        == len(withheld_rows) > 0
    assert rules["secondary_suppression"]["cells_withheld"] > 0, "the demo data should need secondary suppression"
    with sqlite3.connect(totals_broker.access_log_path) as db:
        detail = json.loads(db.execute("SELECT detail FROM access_log WHERE event = 'query.result' "
                                       "ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert detail["secondary_cells_withheld"] == rules["secondary_suppression"]["cells_withheld"]
    assert detail["threshold_cells_withheld"] == rules["min_entities"]["cells_withheld"]
