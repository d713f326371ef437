"""Attacks on two-level queries and the safe forms: each test fails while the attack works.

End to end through a real broker and sandbox (tests/test_released_cell_auditor.py's data: in street A the
lone firm LONE is the only taxpayer of industry 99, and LATE the only one of industry 72 in the last month).
"""

from __future__ import annotations

import pytest

from dsbroker.errors import DsbrokerError, GuardError
from dsbroker.guard import guard
from tests.conftest import GRANT, XUANWU
from tests.test_released_cell_auditor import LATE, LONE, MONTHS, STREET_A, data, stack  # noqa: F401

LONE_GROUP = [STREET_A, "99"]


def _groups(rows):
    return {tuple(str(v) for v in row[:2]) for row in rows}


def test_distinct_drop_is_bypassed_by_its_group_by_form(data, stack):
    """SELECT DISTINCT runs under `suppressed: drop` so that a group of one taxpayer is not listed. The same
    query written as a GROUP BY without aggregates runs under the grant's `mark`, and since it has no cell
    column there is nothing to mark: the lone firm's group is listed, unmarked."""
    client = stack()
    distinct = client.query(GRANT, "SELECT DISTINCT street_code, industry_code FROM tax.declarations")
    grouped = client.query(GRANT, "SELECT street_code, industry_code FROM tax.declarations GROUP BY 1, 2")
    assert tuple(LONE_GROUP) not in _groups(distinct.rows)  # the safe form holds
    assert tuple(LONE_GROUP) not in _groups(grouped.rows), "the lone firm's group is listed, unmarked"


def test_two_levels_count_the_lone_firms_months(data, stack):
    """Through two levels the key-only aggregate becomes a figure about one taxpayer: the number of months the
    lone firm declared (and, by listing the periods, which ones), unmarked."""
    client = stack()
    result = client.query(GRANT, "WITH c AS (SELECT street_code, industry_code, period FROM tax.declarations "
                                 "GROUP BY 1, 2, 3) SELECT street_code, industry_code, COUNT(*) AS months FROM c "
                                 "GROUP BY 1, 2 ORDER BY 1, 2")
    leaked = [row for row in result.rows if [str(row[0]), str(row[1])] == LONE_GROUP]
    assert not leaked or leaked[0][2] is None, f"the lone firm declared {leaked[0][2]} months (truth {len(MONTHS)})"


def test_a_lone_late_firm_s_single_month_is_listed(data, stack):
    """The same for LATE, the only taxpayer of industry 72 in street A in the last month."""
    client = stack()
    result = client.query(GRANT, f"SELECT period FROM tax.declarations WHERE street_code = '{STREET_A}' "
                                 "AND industry_code = '72' GROUP BY 1")
    periods = {str(row[0]) for row in result.rows}
    assert str(MONTHS[-1]) not in periods, f"{LATE}'s lone month is listed: {sorted(periods)[-1]}"


@pytest.mark.parametrize("table", ["memory.main.c", "x.y.declarations", "system.main.duckdb_settings"])
def test_a_catalog_qualified_table_in_the_outer_query_is_refused_not_a_crash(policy, table):
    """split_levels lets any catalog-qualified table through ("a WITH query"); resolve_released_tables then
    looks it up among the lookups with next() and no default: StopIteration escapes the guard (an internal
    error, not a refusal naming the rule). Not a leak, but the outer query's table check relies on it."""
    sql = f"WITH c AS (SELECT street_code, SUM(revenue) AS v FROM tax.declarations GROUP BY 1) SELECT * FROM {table}"
    with pytest.raises((GuardError, DsbrokerError)):
        guard(sql, policy, district=XUANWU, department="xuanwu-fgw")


@pytest.mark.parametrize("sql", [
    "SELECT street_code, industry_code FROM tax.declarations GROUP BY 1, 2 HAVING COUNT(*) > 0",
    "SELECT street_code, industry_code, 1 AS one FROM tax.declarations GROUP BY 1, 2",
    "SELECT street_code, upper(industry_code) AS i FROM tax.declarations GROUP BY street_code, industry_code",
    "WITH c AS (SELECT street_code, period FROM tax.declarations GROUP BY 1, 2 HAVING COUNT(*) > 0) "
    "SELECT street_code, COUNT(*) AS months FROM c GROUP BY 1",
])
def test_every_spelling_of_a_list_of_groups_drops_its_small_groups(policy, sql):
    """The next variants of the key-only GROUP BY: an aggregate in HAVING only, a literal or a function of a key
    beside the keys, inside a two-level query. Each lists groups, so each must run as under drop (or be refused)."""
    try:
        guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
    except (GuardError, DsbrokerError):
        return
    for part in guarded.parts or (guarded,):
        assert part.suppression == "drop", f"{sql!r} lists groups under {part.suppression!r}"
