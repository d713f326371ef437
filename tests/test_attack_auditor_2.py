"""Second round of attacks on the released-cell auditor (sandbox.audit): each test fails while the attack works
(the encrypted-table tests pass: attacks tried that held, kept as regressions).

They reuse the data of tests/test_released_cell_auditor.py (LONE alone in street A industry 99; LATE alone in
month 24 of street A industry 72) and the stacks of it and of tests/test_attack_auditor.py.
"""

from __future__ import annotations

import shutil

import duckdb
import pytest

from tests.conftest import GRANT, SHIPPED_DOMINANCE, XUANWU, dominance_off
from tests.test_attack_auditor import STREET, Stack, _one
from tests.test_released_cell_auditor import (ALL_BUT_99, LATE, LONE, MONTHS, STREET_A, STREET_B,  # noqa: F401
                                              TOTALS_GRANT, data, stack, _truth)


# --- 3. Stale cells: the data changed since they were released -------------------------------------------------

NEW = "91320102NEWF00001X"


def _refreshed(data, tmp_path, declarations, *, name="refreshed.duckdb"):
    """A copy of ``data`` with late declarations ``(period, industry, revenue)`` of a new firm NEW in street A."""
    refreshed = tmp_path / name
    shutil.copy(data, refreshed)
    with duckdb.connect(str(refreshed)) as connection:
        for period, industry, revenue in declarations:
            connection.execute("INSERT INTO tax.declarations VALUES (?, ?, ?, ?, ?, 'X', '173', 'small', ?, 0, 0, 0, "
                               "1)", [NEW, period, XUANWU, STREET_A, industry, revenue])
    return refreshed


def _before_and_after(data, tmp_path, refreshed, before: list[str], after: list[str]):
    """Ask ``before`` on ``data`` and ``after`` on ``refreshed``, one released-cell ledger across the restart."""
    ledger = tmp_path / "released.sqlite"
    first = Stack(data, tmp_path, ledger, name="before")
    try:
        client = first.client()
        old = [_one(client, sql) for sql in before]
    finally:
        first.stop()
    second = Stack(refreshed, tmp_path, ledger, name="after")
    try:
        client = second.client("xuanwu-tjj")
        new = [_one(client, sql, "xuanwu-tjj-2026-001") for sql in after]
    finally:
        second.stop()
    return old, new


@pytest.mark.parametrize("change", ["a late declaration", "a declaration removed"])
def test_cells_gone_stale_elsewhere_still_difference_the_lone_firm_on_rows_that_did_not_change(data, tmp_path, change):  # noqa: F811
    """A stale cell is dropped from the audit's equations (it is no equation of today's blocks), but its released
    value is still an exact equation of the rows that did not change. Street A and street A industry 51 are
    released; a late declaration arrives in industry 51 (both cells go stale); then street A industries 52, 65
    and 72 (rows untouched by the change) pass the audit, though street A less industry 51 less them, all as
    released, is LONE's total. Before the refresh the same third query is withheld."""
    refreshed = _refreshed(data, tmp_path, [(MONTHS[4], "51", 3_000)] if change == "a late declaration" else [])
    if change == "a declaration removed":  # a refresh that removes one declaration of industry 51 (an annulment)
        with duckdb.connect(str(refreshed)) as connection:
            connection.execute("DELETE FROM tax.declarations WHERE taxpayer_id = ? AND period = ?",
                               [f"91{STREET_A}510000", MONTHS[4]])
    sql = "SELECT SUM(revenue) FROM tax.declarations WHERE "
    (street, industry51), (rest,) = _before_and_after(
        data, tmp_path, refreshed,
        [sql + STREET, sql + f"{STREET} AND industry_code = '51'"],
        [sql + f"{STREET} AND industry_code IN ('52', '65', '72')"])
    assert street is not None and industry51 is not None
    assert rest is None or street - industry51 - rest != _truth(data, f"taxpayer_id = '{LONE}'"), \
        "LONE's total is recovered from stale cells and a fresh one"


def test_a_late_filer_over_two_months_is_not_recovered_from_two_stale_months_and_their_union(data, tmp_path):  # noqa: F811
    """The change spread over two cells: months 23 and 24 of street A are released; a new firm's late
    declarations for both months arrive; each month alone is stale and not derivable from what is asked next,
    but months 23-24 together is released, and it less the two months as released is the late filer's total."""
    amounts = (4_321, 1_234)
    refreshed = _refreshed(data, tmp_path, [(MONTHS[22], "51", amounts[0]), (MONTHS[23], "51", amounts[1])])
    sql = f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET} AND "
    (m23, m24), (both,) = _before_and_after(
        data, tmp_path, refreshed,
        [sql + "period = DATE '2026-11-01'", sql + "period = DATE '2026-12-01'"],
        [sql + "period BETWEEN DATE '2026-11-01' AND DATE '2026-12-01'"])
    assert m23 is not None and m24 is not None
    assert both is None or both - m23 - m24 != sum(amounts), "the late filer's two declarations are recovered"


# --- 5. The totals search's fallback (TooComplex) -------------------------------------------------------------

INDUSTRIES = [str(code) for code in range(10, 40)]  # 30 industries of 12 firms: 6 small, 6 large


@pytest.fixture
def halves(tmp_path):
    """One street of 30 industries, each of 12 firms (6 of size_class 'small', 6 'large'): every industry passes
    the threshold as a cell, each half of it does not."""
    import random
    from tests.test_released_cell_auditor import _stack
    chance = random.Random(7)
    path = tmp_path / "halves.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, period DATE, district_code VARCHAR, "
                           "street_code VARCHAR, industry_code VARCHAR, industry_section VARCHAR, "
                           "registration_type VARCHAR, size_class VARCHAR, revenue BIGINT, vat_paid BIGINT, "
                           "cit_paid BIGINT, iit_withheld BIGINT, employees INTEGER)")
        connection.executemany(
            "INSERT INTO tax.declarations VALUES (?, DATE '2025-01-01', ?, ?, ?, 'X', '173', ?, ?, 0, 0, 0, 1)",
            [(f"91{industry}{n:04d}", XUANWU, STREET_A, industry, "small" if n < 6 else "large",
              chance.randint(1_000, 2_000)) for industry in INDUSTRIES for n in range(12)])
        for table, key, extra in (("streets", "street_code", "street_name"),
                                  ("industries", "industry_code", "industry_name"),
                                  ("registration_types", "registration_type", "type_name")):
            connection.execute(f"CREATE TABLE tax.{table} ({key} VARCHAR PRIMARY KEY, {extra} VARCHAR"
                               + (", section_name VARCHAR" if table == "industries" else "") + ")")
    yield path, _stack(path, tmp_path, audit=True)


def _codes(codes) -> str:
    return "industry_code IN (" + ", ".join(f"'{c}'" for c in codes) + ")"


def test_a_space_too_complex_to_search_does_not_let_every_later_leak_in_it_through(halves):
    """When the totals search gives up (TooComplex) the whole touched region counts as one leak, and a leak is
    the new answer's only if its union of blocks is not one the cells released before already gave. Windows of
    10 industries (each a safe cell over 12-firm industries) are released; grouping by size_class then splits
    every industry into two failing halves, and on that finer partition the windows alone span a space too
    large to search: the "leak" of old and of old + new is the same touched region, so nothing new is ever
    found in it. The small firms of industries 0-9 less those of industries 1-9 are then released: the total of
    6 taxpayers (industry 0's small firms)."""
    path, stacked = halves
    connect = next(stacked)
    try:
        client = connect()
        for start in range(len(INDUSTRIES) - 9):
            assert _one(client, "SELECT SUM(revenue) FROM tax.declarations WHERE "
                                + _codes(INDUSTRIES[start:start + 10])) is not None
        client.query(GRANT, "SELECT size_class, SUM(revenue) FROM tax.declarations GROUP BY size_class")
        ten = _one(client, "SELECT SUM(revenue) FROM tax.declarations WHERE size_class = 'small' AND "
                           + _codes(INDUSTRIES[0:10]))
        nine = _one(client, "SELECT SUM(revenue) FROM tax.declarations WHERE size_class = 'small' AND "
                            + _codes(INDUSTRIES[1:10]))
    finally:
        stacked.close()
    six = _truth(path, f"industry_code = '{INDUSTRIES[0]}' AND size_class = 'small'")
    assert ten is None or nine is None or ten - nine != six, "a total of 6 taxpayers is recovered"


# --- 4. Encrypted answers: a grouped table against a plaintext total ----------------------------------------

@pytest.mark.parametrize("encrypted_first", [False, True])
def test_an_encrypted_table_by_industry_does_not_difference_a_plaintext_street_total(data, tmp_path, encrypted_first):  # noqa: F811
    """Street A by industry, encrypted (industry 99 is left out as small), and street A's total in plaintext,
    in either order: the total less the decrypted groups is LONE's revenue."""
    from broker.client.encryption_key import EncryptionKey
    from tests.conftest import ENCRYPTED
    deployment = Stack(data, tmp_path, tmp_path / "released.sqlite",
                       edits=[("results: [aggregate]", "results: [aggregate, encrypted]"),
                              (SHIPPED_DOMINANCE, dominance_off(ENCRYPTED))])
    try:
        client = deployment.client()
        key = EncryptionKey.generate()
        table = f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {STREET} GROUP BY industry_code"
        whole = f"SELECT SUM(revenue) FROM tax.declarations WHERE {STREET}"
        if encrypted_first:
            rows = client.query(GRANT, table, encryption_key=key).rows
            total = _one(client, whole)
        else:
            total = _one(client, whole)
            rows = client.query(GRANT, table, encryption_key=key).rows
    finally:
        deployment.stop()
    groups = {row[0]: row[1] for row in rows if row[1] is not None}
    assert "99" not in groups
    assert total is None or len(groups) < 4 or total - sum(groups.values()) != _truth(
        data, f"taxpayer_id = '{LONE}'"), "the lone firm's revenue is recovered"
