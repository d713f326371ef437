"""The released-cell auditor against the classic differencing attacks, over data with known lone firms.

The data: two streets, a few industries of 15 firms each, every firm declaring 24 months; and three
protected figures a curious department would go after:
- ``LONE``: the only firm of industry 99 in street A (street B has 12 firms in 99), small beside its
  street, so the dominance rule does not protect it;
- ``LATE``: the only firm of industry 72 in street A that declares in the 24th month (the 12 others there
  stopped after month 23).
Each test runs the attack through the real broker and sandbox, with a fresh released-cell ledger, and then
an independent checker (sharing no code with the auditor: exact fractions over the declarations' atoms,
computed with plain DuckDB) solves every cell the department received as a linear system and confirms that
neither firm's figure, nor any atom of fewer than k taxpayers, is determined by them.
"""

from __future__ import annotations

import datetime as dt
import time
import random
from fractions import Fraction
from pathlib import Path

import duckdb
import pytest

from broker.client.sdk import BrokerClient
from broker.server import start_broker
from dsbroker.policy.model import load_policy
from sandbox.server import start_sandbox
from sandbox.settings import SandboxSettings
from tests.conftest import (GRANT, POLICIES, XUANWU, broker_settings_for, client_tls, dev_keys, shipped_grant_text,
                            sign, token_for)
from broker.dev.keys import sandbox_settings

STREET_A, STREET_B = "320102001", "320102002"
MONTHS = [dt.date(2025 + m // 12, m % 12 + 1, 1) for m in range(24)]
LONE, LATE = "91320102LONE00001X", "91320102LATE00001X"
K = 10
TOTALS_GRANT = "xuanwu-fgw-2026-totals"


def _rows() -> list[tuple]:
    """(taxpayer, period, street, industry, revenue) of every declaration."""
    chance = random.Random(19)
    rows = []

    def firm(taxpayer: str, street: str, industry: str, months: list[dt.date], low: int = 1_000, high: int = 5_000):
        for month in months:
            rows.append((taxpayer, month, street, industry, chance.randint(low, high)))

    for street in (STREET_A, STREET_B):
        for industry in ("51", "52", "65"):
            for n in range(15):
                firm(f"91{street}{industry}{n:04d}", street, industry, MONTHS)
    for n in range(12):
        firm(f"91{STREET_A}72{n:04d}", STREET_A, "72", MONTHS[:23])
        firm(f"91{STREET_B}99{n:04d}", STREET_B, "99", MONTHS)
    for n in range(15):
        firm(f"91{STREET_B}72{n:04d}", STREET_B, "72", MONTHS)
    firm(LONE, STREET_A, "99", MONTHS, 1_500, 2_500)
    firm(LATE, STREET_A, "72", MONTHS[23:], 1_500, 2_500)
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "owner.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, period DATE, district_code VARCHAR, "
                           "street_code VARCHAR, industry_code VARCHAR, industry_section VARCHAR, "
                           "registration_type VARCHAR, size_class VARCHAR, revenue BIGINT, vat_paid BIGINT, "
                           "cit_paid BIGINT, iit_withheld BIGINT, employees INTEGER)")
        connection.executemany("INSERT INTO tax.declarations VALUES "
                               "(?, ?, ?, ?, ?, 'X', '173', 'small', ?, 0, 0, 0, 1)",
                               [(t, p, XUANWU, s, i, r) for t, p, s, i, r in _rows()])
        for table, key, extra in (("streets", "street_code", "street_name"),
                                  ("industries", "industry_code", "industry_name"),
                                  ("registration_types", "registration_type", "type_name")):
            connection.execute(f"CREATE TABLE tax.{table} ({key} VARCHAR PRIMARY KEY, {extra} VARCHAR"
                               + (", section_name VARCHAR" if table == "industries" else "") + ")")
    return path


@pytest.fixture
def stack(data, tmp_path):
    """A sandbox and broker over ``data`` with a released-cell ledger of this test's own; yields a function
    that starts a client for a department (the demo grant's, or a second grant's)."""
    yield from _stack(data, tmp_path, audit=True)


@pytest.fixture
def unaudited_stack(data, tmp_path):
    """The same with the auditor turned off: the attacks must then work, or the checker proves nothing."""
    yield from _stack(data, tmp_path, audit=False)


def _stack(data: Path, tmp_path: Path, *, audit: bool):
    sandbox = start_sandbox(SandboxSettings(audit_released_cells=audit,
        listen="127.0.0.1:0", data=str(data), datasets=("tax.declarations", "tax.streets", "tax.industries",
                                                        "tax.registration_types"),
        released_cells=str(tmp_path / "released.sqlite"), privacy_ledger=str(tmp_path / "privacy.sqlite"),
        execution_ledger=str(tmp_path / "executions.sqlite"), policy_ledger=str(tmp_path / "policies.sqlite"),
        **sandbox_settings(dev_keys())))
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (POLICIES / f"{GRANT}.yaml").read_text(encoding="utf-8")
    (policies / f"{GRANT}.yaml").write_text(sign(text), encoding="utf-8")
    # A second department of the district with a grant over the same dataset: the auditor's scope is the
    # dataset, so what one department was given counts against what the other asks.
    second = text.replace(f"id: {GRANT}", "id: xuanwu-tjj-2026-001").replace(
        "department: xuanwu-fgw", "department: xuanwu-tjj")
    (policies / "xuanwu-tjj-2026-001.yaml").write_text(sign(second), encoding="utf-8")
    # Totals (ROLLUP) are refused under the dominance rule, so the test of totals has a grant without it.
    totals = shipped_grant_text(without_dominance="the test is about totals, which the dominance rule refuses")
    (policies / f"{TOTALS_GRANT}.yaml").write_text(sign(totals.replace(f"id: {GRANT}", f"id: {TOTALS_GRANT}")),
                                                   encoding="utf-8")
    broker = start_broker(broker_settings_for(sandbox.port, tmp_path / "log.sqlite", policies=str(policies)))
    clients: list[BrokerClient] = []

    def connect(department: str = "xuanwu-fgw") -> BrokerClient:
        client = BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(department), tls=client_tls())
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
    broker.stop()
    sandbox.stop()


class Received:
    """Every released SUM cell a department received, as (the WHERE of its rows, the value), for the checker."""

    def __init__(self) -> None:
        self.cells: list[tuple[str, int]] = []
        self.audited = 0

    def ask(self, client: BrokerClient, grant: str, sql: str, where: str, keys: tuple[str, ...] = ()) -> list:
        """Run ``sql``; record each released cell with the WHERE (over the declarations) of the rows it adds up."""
        result = client.query(grant, sql)
        self.audited += sum(r["cells_withheld"] for r in result.disclosure_rules if r["rule"] == "audit")
        for row in result.rows:
            value = row[-1]
            if value is None:
                continue
            condition = " AND ".join([f"({where})"] + [f"{key} = '{row[i]}'" for i, key in enumerate(keys)
                                                      if row[i] is not None])
            self.cells.append((condition, int(value)))
        return result.rows


def _atoms(data: Path) -> tuple[list[tuple], dict[tuple, int]]:
    """The finest partition a query can express here: (street, industry, month); with each atom's entities."""
    with duckdb.connect(str(data), read_only=True) as connection:
        rows = connection.execute("SELECT street_code, industry_code, period, COUNT(DISTINCT taxpayer_id) "
                                  "FROM tax.declarations GROUP BY ALL ORDER BY ALL").fetchall()
    return [r[:3] for r in rows], {r[:3]: r[3] for r in rows}


def _determined(data: Path, cells: list[tuple[str, int]], target: set[tuple]) -> bool:
    """Whether the received cells determine the total over the atoms ``target``: is its indicator in their row
    space (exact Gaussian elimination over the rationals)."""
    atoms, _ = _atoms(data)
    index = {atom: i for i, atom in enumerate(atoms)}
    matrix = []
    with duckdb.connect(str(data), read_only=True) as connection:
        for where, _ in cells:
            covered = connection.execute(f"SELECT DISTINCT street_code, industry_code, period FROM tax.declarations "
                                         f"WHERE {where}").fetchall()
            matrix.append({index[a]: Fraction(1) for a in covered})
    goal = {index[a]: Fraction(1) for a in target if a in index}
    return _in_row_space(matrix, goal)


def _in_row_space(rows: list[dict[int, Fraction]], goal: dict[int, Fraction]) -> bool:
    pivots: dict[int, dict[int, Fraction]] = {}

    def reduce(vector: dict[int, Fraction]) -> dict[int, Fraction]:
        vector = dict(vector)
        while vector:
            lead = min(vector)
            if lead not in pivots:
                return vector
            factor = vector[lead] / pivots[lead][lead]
            for column, value in pivots[lead].items():
                vector[column] = vector.get(column, Fraction(0)) - factor * value
                if vector[column] == 0:
                    del vector[column]
        return vector

    for row in rows:
        left = reduce(row)
        if left:
            pivots[min(left)] = left
    return not reduce(goal)


def _lone_atoms() -> set[tuple]:
    return {(STREET_A, "99", month) for month in MONTHS}


def _late_atoms() -> set[tuple]:
    return {(STREET_A, "72", MONTHS[23])}


def _nothing_protected_determined(data: Path, received: Received) -> None:
    assert not _determined(data, received.cells, _lone_atoms()), "the lone firm's total is determined"
    assert not _determined(data, received.cells, _late_atoms()), "the late firm's month is determined"
    _, entities = _atoms(data)
    for atom, count in entities.items():
        if count < K and atom[:2] in ((STREET_A, "99"), (STREET_A, "72")):
            assert not _determined(data, received.cells, {atom}), f"atom {atom} of {count} taxpayers is determined"


def _truth(data: Path, where: str) -> int:
    with duckdb.connect(str(data), read_only=True) as connection:
        return connection.execute(f"SELECT SUM(revenue) FROM tax.declarations WHERE {where}").fetchone()[0]


ALL_BUT_99 = "industry_code IN ('51', '52', '65', '72')"


def test_complement_by_an_in_list_does_not_recover_the_lone_firm(data, stack):
    client, received = stack(), Received()
    street = f"street_code = '{STREET_A}'"
    first = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}", street)
    second = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street} AND {ALL_BUT_99}",
                          f"{street} AND {ALL_BUT_99}")
    assert first[0][0] == _truth(data, street)  # the first answer is exact
    assert second[0][0] is None  # the difference would be the lone firm: withheld by the audit
    assert received.audited == 1
    _nothing_protected_determined(data, received)


def test_without_the_auditor_the_attacks_recover_the_firms(data, unaudited_stack):
    """The checker is not vacuous: with the auditor off, the complement, the period and the margin attacks
    determine the firms, and their differences are the firms' exact figures."""
    client, received = unaudited_stack(), Received()
    street = f"street_code = '{STREET_A}'"
    total = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}", street)[0][0]
    rest = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street} AND {ALL_BUT_99}",
                        f"{street} AND {ALL_BUT_99}")[0][0]
    assert total - rest == _truth(data, f"taxpayer_id = '{LONE}'")
    assert _determined(data, received.cells, _lone_atoms())
    cell = f"street_code = '{STREET_A}' AND industry_code = '72'"
    months23 = f"{cell} AND period BETWEEN DATE '2025-01-01' AND DATE '2026-11-01'"
    early = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {months23}", months23)[0][0]
    every = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {cell}", cell)[0][0]
    assert every - early == _truth(data, f"taxpayer_id = '{LATE}'")
    assert _determined(data, received.cells, _late_atoms())
    margin = Received()
    margin.ask(client, GRANT, "SELECT street_code, SUM(revenue) FROM tax.declarations GROUP BY street_code", "TRUE",
               ("street_code",))
    margin.ask(client, GRANT, "SELECT street_code, industry_code, SUM(revenue) FROM tax.declarations "
               "GROUP BY street_code, industry_code", "TRUE", ("street_code", "industry_code"))
    assert _determined(data, margin.cells, _lone_atoms())


def test_a_repeated_cell_is_free_and_an_unrelated_one_is_released(data, stack):
    client, received = stack(), Received()
    street = f"street_code = '{STREET_A}'"
    for _ in range(2):
        assert received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}", street)[0][0] \
            == _truth(data, street)
    other = f"street_code = '{STREET_B}' AND {ALL_BUT_99}"
    assert received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {other}", other)[0][0] \
        == _truth(data, other)
    assert received.audited == 0


def test_period_24_against_23_months_does_not_recover_the_late_firm(data, stack):
    client, received = stack(), Received()
    cell = f"street_code = '{STREET_A}' AND industry_code = '72'"
    months23 = f"{cell} AND period BETWEEN DATE '2025-01-01' AND DATE '2026-11-01'"
    received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {months23}", months23)
    answer = received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {cell}", cell)
    assert answer[0][0] is None
    assert received.audited == 1
    _nothing_protected_determined(data, received)


def test_margin_a_street_total_against_its_industry_table(data, stack):
    client, received = stack(), Received()
    total = received.ask(client, GRANT, "SELECT street_code, SUM(revenue) FROM tax.declarations GROUP BY street_code",
                         "TRUE", ("street_code",))
    assert [r[1] for r in total] == [_truth(data, f"street_code = '{s}'") for s in (STREET_A, STREET_B)]
    table = received.ask(client, GRANT, "SELECT street_code, industry_code, SUM(revenue) FROM tax.declarations "
                         "GROUP BY street_code, industry_code", "TRUE", ("street_code", "industry_code"))
    released_a = [r for r in table if r[0] == STREET_A and r[2] is not None]
    assert len(released_a) == 3  # of A's four industries of 10 or more taxpayers, one is withheld by the audit
    assert received.audited == 1
    assert all(r[2] is not None for r in table if r[0] == STREET_B)  # street B's table is untouched
    _nothing_protected_determined(data, received)


def test_overlapping_in_lists_do_not_recover_the_lone_firm(data, stack):
    client, received = stack(), Received()
    street = f"street_code = '{STREET_A}'"
    for industries in ("'51', '99'", "'52', '99'", "'51', '52'"):
        where = f"{street} AND industry_code IN ({industries})"
        received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {where}", where)
    assert received.audited == 1  # (51+99) + (52+99) - (51+52) is twice the lone firm
    _nothing_protected_determined(data, received)


def test_a_padding_tracker_over_two_streets_does_not_recover_the_lone_firm(data, stack):
    """Denning's tracker: pad the protected cell with rows that make it large, then take the padding away."""
    client, received = stack(), Received()
    both = f"street_code IN ('{STREET_A}', '{STREET_B}')"
    received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {both} "
                 "GROUP BY industry_code", both, ("industry_code",))
    only_b = f"street_code = '{STREET_B}'"
    received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {only_b} "
                 "GROUP BY industry_code", only_b, ("industry_code",))
    assert received.audited >= 1
    _nothing_protected_determined(data, received)


def test_rollup_totals_against_a_later_detail_query(data, stack):
    client, received = stack(), Received()
    received.ask(client, TOTALS_GRANT, "SELECT street_code, SUM(revenue) FROM tax.declarations "
                 "GROUP BY ROLLUP (street_code)", "TRUE", ("street_code",))
    street = f"street_code = '{STREET_A}'"
    received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {street} "
                 "GROUP BY industry_code", street, ("industry_code",))
    assert received.audited == 1
    _nothing_protected_determined(data, received)


def test_two_departments_cannot_pool_their_answers(data, stack):
    """The scope is the dataset: what one department received counts against what another asks."""
    first, second, received = stack("xuanwu-fgw"), stack("xuanwu-tjj"), Received()
    street = f"street_code = '{STREET_A}'"
    received.ask(first, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}", street)
    where = f"{street} AND {ALL_BUT_99}"
    answer = received.ask(second, "xuanwu-tjj-2026-001",
                          f"SELECT SUM(revenue) FROM tax.declarations WHERE {where}", where)
    assert answer[0][0] is None
    _nothing_protected_determined(data, received)


def test_a_safe_remainder_is_released(data, stack):
    """A street's total next to its industry table whose withheld remainder holds many taxpayers: nothing is
    withheld by the audit (the remainder is a released total of enough taxpayers, not a firm)."""
    client, received = stack(), Received()
    street = f"street_code = '{STREET_B}'"
    received.ask(client, GRANT, f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}", street)
    answer = received.ask(client, GRANT, f"SELECT industry_code, SUM(revenue) FROM tax.declarations WHERE {street} "
                          "AND industry_code IN ('51', '52') GROUP BY industry_code", street, ("industry_code",))
    assert all(r[1] is not None for r in answer)
    assert received.audited == 0


def test_the_ledger_survives_a_restart(data, tmp_path):
    """The released cells are on disk: a restarted sandbox still refuses the difference."""
    ledger = tmp_path / "released.sqlite"
    street = f"street_code = '{STREET_A}'"
    for sql in (f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}",
                f"SELECT SUM(revenue) FROM tax.declarations WHERE {street} AND {ALL_BUT_99}"):
        sandbox = start_sandbox(SandboxSettings(
            listen="127.0.0.1:0", data=str(data), datasets=("tax.declarations",), released_cells=str(ledger),
            privacy_ledger=str(tmp_path / "p.sqlite"), execution_ledger=str(tmp_path / "e.sqlite"),
            policy_ledger=str(tmp_path / "pl.sqlite"), **sandbox_settings(dev_keys())))
        log = tmp_path / f"log-{len(sql)}.sqlite"
        broker = start_broker(broker_settings_for(sandbox.port, log))
        try:
            with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
                value = client.query(GRANT, sql).rows[0][0]
        finally:
            broker.stop()
            sandbox.stop()
    assert value is None


def test_the_grant_in_use_is_the_demo_grant():
    """The tests above use the shipped grant's threshold."""
    assert load_policy(POLICIES / f"{GRANT}.yaml").min_entities == K


def test_a_monthly_report_on_the_demo_data_loses_only_cells_that_would_give_a_remainder_away(demo_db, tmp_path,
                                                                                              direct):
    """A district's standard report, in order: street totals, section totals, street x section, 24 months, year
    over year. It runs to the end; the auditor takes one section total (the complement of the section the dominance
    rule withholds, which the street totals would otherwise give) and cells of the street x section table, and each
    one it takes of the table is needed: given back, it completes a total of the released cells that one taxpayer
    (or the two largest of one atom) dominate (an independent programme finds it), or its street's (or its
    section's) withheld remainder, fewer than k taxpayers, would be the street's (section's) total less its
    released cells, and fail the cell rules."""
    from dsbroker.guard import guard
    from sandbox.audit.auditor import Auditor
    from sandbox.disclosure.release import release
    from sandbox.engine.duckdb_engine import DuckDBEngine
    from sandbox.engine.interface import EngineLimits
    from sandbox.ledgers.released_cells import ReleasedCellLedger

    policy = load_policy(POLICIES / f"{GRANT}.yaml")
    engine = DuckDBEngine(str(demo_db), EngineLimits())
    auditor = Auditor(engine, ReleasedCellLedger(tmp_path / "released.sqlite"))
    report = ["SELECT street_code, SUM(vat_paid) FROM tax.declarations GROUP BY street_code",
              "SELECT industry_section, SUM(vat_paid) FROM tax.declarations GROUP BY industry_section",
              "SELECT street_code, industry_section, SUM(vat_paid) FROM tax.declarations GROUP BY 1, 2",
              "SELECT period, SUM(vat_paid) FROM tax.declarations GROUP BY period",
              "SELECT year(period) AS y, street_code, SUM(vat_paid) FROM tax.declarations GROUP BY 1, 2"]
    answers = []
    try:
        for sql in report:
            guarded = guard(sql, policy, district=XUANWU, department="xuanwu-fgw")
            result = engine.execute(guarded.sql, timeout_s=60, max_rows=10_000)
            audited = release(result.names, result.types, result.rows, guarded,
                              audit=auditor.session(guarded, deadline=time.monotonic() + 60))
            plain = release(result.names, result.types, result.rows, guarded)
            answers.append((audited, plain))
    finally:
        engine.close()
    taken = [a.counts["audit"] for a, _ in answers]
    assert taken[0] == 0 and taken[3:] == [0, 0], taken
    # The section table's dominated section is the district's total (the street totals added up) less the
    # sections released: a total that takes blocks passing alone (streets x that section where many firms are).
    # The audit withholds one more section, so that the two withheld ones are only known together, and their sum
    # is not dominated.
    streets, (sections, plain_sections) = answers[0][0], answers[1]
    dominated = [row for row, plain in zip(sections.rows, plain_sections.rows, strict=True) if plain[1] is None]
    assert len(dominated) == 1 and taken[1] == 1, (dominated, taken)
    district = sum(row[1] for row in streets.rows)
    remainder = district - sum(row[1] for row in sections.rows if row[1] is not None)
    (truth,) = direct.execute(f"SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = '{XUANWU}' AND "
                              f"industry_section = '{dominated[0][0]}'").fetchone()
    assert remainder != truth, "the dominated section's total is the district's less the released sections"
    withheld_sections = {row[0] for row in sections.rows if row[1] is None}
    table, plain_table = answers[2]
    assert 0 < taken[2] < len(table.rows) // 4, taken  # a few cells of 98, reported in the closing note

    def fails(where: str) -> bool:
        """Whether the rows fail the grant's cell rules as one cell: fewer than k taxpayers, or the two largest
        taxpayers' VAT over 85% of it (the shipped grant's dominance rule), computed here from the raw rows."""
        amounts = sorted((abs(a) for (a,) in direct.execute(
            f"SELECT SUM(vat_paid) FROM tax.declarations WHERE district_code = '{XUANWU}' AND {where} "
            "GROUP BY taxpayer_id").fetchall()), reverse=True)
        return 0 < len(amounts) < policy.min_entities or 100 * sum(amounts[:2]) > 85 * sum(amounts)

    def withheld_by_rules(rows, position, value):
        return [r[1 - position] for r, p in zip(rows, plain_table.rows, strict=True)
                if r[position] == value and p[2] is None]

    dominated_total = _DominatedTotals(direct, streets.rows, sections.rows)
    assert not dominated_total.found([(r[0], r[1]) for r in table.rows if r[2] is not None])
    assert dominated_total.found([(r[0], r[1]) for r in plain_table.rows if r[2] is not None]), \
        "the check is not vacuous: without the audit the table completes a dominated total"
    for row, plain in zip(table.rows, plain_table.rows, strict=True):
        if row[2] is not None or plain[2] is None:
            continue  # released, or withheld by the per-query rules
        street, section = row[0], row[1]
        released = [(r[0], r[1]) for r in table.rows if r[2] is not None] + [(street, section)]
        if dominated_total.found(released):
            continue  # given back, it completes a total that one or two taxpayers dominate
        remainders = []
        for position, value, column, other in ((0, street, "street_code", "industry_section"),
                                               (1, section, "industry_section", "street_code")):
            rest = withheld_by_rules(plain_table.rows, position, value)
            if rest:
                listed = ", ".join(f"'{v}'" for v in rest)
                remainders.append(fails(f"{column} = '{value}' AND {other} IN ({listed})"))
        if section in withheld_sections:
            # The withheld sections are known together (the district's total less the released ones): less the
            # table's released cells of them, the rest of their cells is a total too.
            rest = [f"(street_code = '{r[0]}' AND industry_section = '{r[1]}')" for r in table.rows
                    if r[1] in withheld_sections and r[2] is None and (r[0], r[1]) != (street, section)]
            remainders.append(bool(rest) and fails(f"({' OR '.join(rest)})"))
        assert any(remainders), (street, section)


class _DominatedTotals:
    """An independent check (scipy's linprog over the atoms street x section, sharing no code with the auditor):
    whether the released street totals, section totals and street x section cells determine some total with weights
    of one sign (``x = C^T y >= 0`` per atom) that one taxpayer, or the two largest of one atom, dominate under the
    shipped rule (n=2, k=85). Every taxpayer sits in one atom, so its net is its atom's weight times its VAT."""

    def __init__(self, direct, streets, sections) -> None:
        rows = direct.execute(f"SELECT street_code, industry_section, taxpayer_id, SUM(vat_paid) FROM tax.declarations "
                              f"WHERE district_code = '{XUANWU}' GROUP BY 1, 2, 3").fetchall()
        assert all(v >= 0 for *_, v in rows)  # VAT of one sign: the magnitudes add up per atom
        self.atoms = sorted({(s, t) for s, t, _, _ in rows})
        at = {atom: i for i, atom in enumerate(self.atoms)}
        self.totals = [0.0] * len(self.atoms)
        tops: dict[int, list[float]] = {}
        for s, t, _, v in rows:
            self.totals[at[(s, t)]] += float(v)
            tops.setdefault(at[(s, t)], []).append(float(v))
        self.tops = {i: sorted(values, reverse=True)[:2] for i, values in tops.items()}
        self.fixed = [{at[a] for a in self.atoms if a[0] == row[0]} for row in streets]
        self.fixed += [{at[a] for a in self.atoms if a[1] == row[0]} for row in sections if row[1] is not None]
        self.at = at

    def found(self, cells: list[tuple[str, str]]) -> bool:
        import numpy as np
        from scipy.optimize import linprog
        vectors = self.fixed + [{self.at[c]} for c in cells if c in self.at]
        c = np.zeros((len(vectors), len(self.atoms)))
        for i, atoms in enumerate(vectors):
            c[i, list(atoms)] = 1.0
        scale = max(self.totals)
        totals = np.array(self.totals) / scale
        for atom, top in self.tops.items():
            for members in (top[:1], top[:2]):
                # max (members' net - 85% of the total) over x = C^T y >= 0 with the total at most 1
                objective = np.zeros(len(self.atoms))
                objective[atom] = sum(members) / scale
                objective -= 0.85 * totals
                result = linprog(-(c @ objective), A_ub=np.vstack([-c.T, (c @ totals)[None, :]]),
                                 b_ub=np.concatenate([np.zeros(len(self.atoms)), [1.0]]),
                                 bounds=[(None, None)] * len(vectors), method="highs")
                if result.status == 0 and -result.fun > 1e-6:
                    return True
        return False


def test_the_owner_sees_what_the_released_cells_determine(data, tmp_path):
    """``dsbroker sandbox released``: after the audited complement attack no block that fails the rules is
    determined; in a ledger holding both cells (as one written before the auditor would), the lone firm's block
    is, and the command says so."""
    import json
    import shutil as files

    from click.testing import CliRunner

    from broker.cli.main import main as cli
    from dsbroker.guard import guard
    from sandbox.ledgers.released_cells import ReleasedCell, ReleasedCellLedger

    owner = tmp_path / "owner.duckdb"
    files.copy(data, owner)
    files.copy(POLICIES.parent / "sandbox" / "demo" / "catalog.yaml", owner.with_name("owner.catalog.yaml"))
    street = f"street_code = '{STREET_A}'"
    queries = (f"SELECT SUM(revenue) FROM tax.declarations WHERE {street}",
               f"SELECT SUM(revenue) FROM tax.declarations WHERE {street} AND {ALL_BUT_99}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stack = _stack(owner, run_dir, audit=True)
    client = next(stack)()
    answers = [client.query(GRANT, sql).rows[0][0] for sql in queries]
    next(stack, None)  # stops the servers
    assert answers[0] is not None and answers[1] is None

    def summary(ledger: Path) -> dict:
        config = tmp_path / "sandbox.toml"
        config.write_text(f'data = "{owner}"\ndatasets = ["tax.declarations"]\nreleased_cells = "{ledger}"\n')
        run = CliRunner().invoke(cli, ["sandbox", "released", "--config", str(config), "--json"])
        assert run.exit_code == 0, run.output
        (found,) = json.loads(run.output)
        return found

    audited = summary(run_dir / "released.sqlite")
    assert audited["cells"] == 1 and audited["failing_determined"] == 0
    unaudited = ReleasedCellLedger(tmp_path / "unaudited.sqlite")
    policy = load_policy(POLICIES / f"{GRANT}.yaml")
    for sql in queries:
        coverage = guard(sql, policy, district=XUANWU, department="xuanwu-fgw").coverage
        unaudited.record("tax.declarations", [ReleasedCell(coverage, 0, (), "sum:revenue", 0)])
    unaudited.close()
    both = summary(tmp_path / "unaudited.sqlite")
    assert both["cells"] == 2 and both["failing_determined"] == 1  # the lone firm's block
