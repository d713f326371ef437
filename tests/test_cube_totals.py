"""Totals that are not a ROLLUP (CUBE, GROUPING SETS): the released-cell auditor protects their tables.

A CUBE's margins are not a tree of equations: the lone firm of industry 99 in street A is its street's total
less the street's other industries, and also industry 99's total less street B's part of it. Secondary
suppression works per equation of a tree; the auditor solves the released cells as one linear system.
Over the auditor's data with known lone firms (:mod:`tests.test_released_cell_auditor`), through the real
broker and sandbox, and checked by its independent checker (exact fractions over the declarations' atoms).
"""

from __future__ import annotations

import grpc
import pytest

from dsbroker.errors import DsbrokerError

from tests.test_released_cell_auditor import (  # noqa: F401 (fixtures)
    K, LONE, STREET_A, STREET_B, TOTALS_GRANT, Received, _nothing_protected_determined, _truth, data, stack,
    unaudited_stack)

CUBE = ("SELECT street_code, industry_code, SUM(revenue) FROM tax.declarations "
        "GROUP BY CUBE (street_code, industry_code)")
KEYS = ("street_code", "industry_code")


def _cells(rows: list) -> dict[tuple, object]:
    return {(street, industry): value for street, industry, value in rows}


def test_a_cube_does_not_give_the_lone_firm_away(data, stack):
    client, received = stack(), Received()
    rows = received.ask(client, TOTALS_GRANT, CUBE, "TRUE", KEYS)
    cells = _cells(rows)
    assert cells[(STREET_A, "99")] is None  # one firm: under the threshold
    # Street A's total and industry 99's total are each the lone firm plus released cells: the auditor withholds
    # what it takes that neither difference can be taken.
    assert received.audited >= 2
    _nothing_protected_determined(data, received)


def test_without_the_auditor_a_cube_is_refused(data, unaudited_stack):
    """Secondary suppression protects a tree of totals only; with the auditor off a CUBE is not answered."""
    client = unaudited_stack()
    with pytest.raises(DsbrokerError) as raised:
        client.query(TOTALS_GRANT, CUBE)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOTALS_NEED_AUDIT")
    rollup = client.query(TOTALS_GRANT, CUBE.replace("CUBE", "ROLLUP"))  # and the sandbox keeps serving
    assert rollup.rows


def test_grouping_sets_of_two_margins_release_every_cell_that_passes(data, stack):
    """Street totals next to industry totals: no cell of either is another's difference, so nothing is withheld
    besides the threshold's, and each cell is exact."""
    client, received = stack(), Received()
    rows = received.ask(client, TOTALS_GRANT, "SELECT street_code, industry_code, SUM(revenue) FROM tax.declarations "
                        "GROUP BY GROUPING SETS ((street_code), (industry_code))", "TRUE", KEYS)
    assert received.audited == 0
    for street, industry, value in rows:
        where = f"street_code = '{street}'" if industry is None else f"industry_code = '{industry}'"
        assert value == _truth(data, where)
    assert len(rows) == 2 + 5
    _nothing_protected_determined(data, received)


def test_a_cube_after_the_street_table_is_audited_against_it(data, stack):
    """The auditor's scope is the dataset: a CUBE asked after a street's industry table adds nothing that
    opens the lone firm."""
    client, received = stack(), Received()
    street = f"street_code = '{STREET_A}'"
    received.ask(client, TOTALS_GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {street} "
                 "GROUP BY industry_code", street, ("industry_code",))
    received.ask(client, TOTALS_GRANT, CUBE, "TRUE", KEYS)
    received.ask(client, TOTALS_GRANT, "SELECT street_code, industry_code, SUM(revenue) FROM tax.declarations "
                 "GROUP BY GROUPING SETS ((street_code), (industry_code), ())", "TRUE", KEYS)
    _nothing_protected_determined(data, received)
