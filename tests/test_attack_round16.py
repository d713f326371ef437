"""Attack round 16: totals as CUBE and GROUPING SETS (commit 0b030e0), from a curious department's side.

Each test runs the real guard and the sandbox's release (``sandbox.disclosure.release.run``) with the released-cell
auditor on a real DuckDB file (and the real PostgreSQL server for parity), over crafted declarations whose small
cells are known. Where a test checks that nothing protected is determined, it does so with its own checker,
sharing no code with the auditor: exact fractions over the atoms (the finest cells of the crafted data), every
released sum an equation, and a protected set of atoms (fewer than k taxpayers in all) determined when some
combination of the equations is nonzero on it alone.

The tests named for a behaviour that is not there yet fail on main (the findings); the others pin attacks that
the code stops.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from fractions import Fraction
from pathlib import Path

import duckdb
import grpc
import pytest

from dsbroker.errors import DsbrokerError
from sandbox.audit.auditor import Auditor
from sandbox.disclosure.release import audited_release, run
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.engine.interface import EngineLimits
from sandbox.ledgers.released_cells import ReleasedCellLedger
from tests.conftest import POSTGRES_DSN, TOTALS, copy_to_postgres, declarations_file, policy_without_dominance, \
    postgres_admin
from tests.engine_cells import SERVED, guarded

K = 3
INDUSTRY_FROM_ID = "UPDATE tax.declarations SET industry_code = split_part(taxpayer_id, '-', 2)"
CUBE = ("SELECT street_code, industry_code, SUM(revenue) AS revenue FROM tax.declarations "
        "GROUP BY CUBE (street_code, industry_code)")


def _grant(k: int = K, **changes):
    """The shipped grant with its dominance rule off (totals need it off), at threshold ``k``."""
    return dataclasses.replace(policy_without_dominance(TOTALS), min_entities=k, **changes)


def _firms(cells: dict[tuple[str, str], int]) -> list[tuple]:
    """Declarations: ``cells[(street, industry)]`` firms in each cell, one declaration each in January 2025, with
    revenues that are all different (no sum equals another by chance)."""
    rows = []
    for number, ((street, industry), count) in enumerate(sorted(cells.items())):
        for n in range(count):
            rows.append((f"{street}-{industry}-{n}", dt.date(2025, 1, 1), street, 10_000 * (number + 1) + 7 * n + 1,
                         10))
    return rows


def _engine(directory: Path, rows: list[tuple], *edits: str) -> DuckDBEngine:
    directory.mkdir(parents=True, exist_ok=True)
    path = declarations_file(directory / "owner-data.duckdb", rows)
    with duckdb.connect(str(path)) as connection:
        for edit in (INDUSTRY_FROM_ID, *edits):
            connection.execute(edit)
    return DuckDBEngine(path, EngineLimits(pool_size=1))


@pytest.fixture
def opened(tmp_path):
    """Engines and auditors made by a test, closed after it."""
    made: list = []
    yield made
    for thing in reversed(made):
        (thing.ledger.close if isinstance(thing, Auditor) else thing.close)()


def _auditor(opened: list, engine, path: Path) -> Auditor:
    auditor = Auditor(engine, ReleasedCellLedger(path))
    opened.append(auditor)
    return auditor


class Received:
    """What a department received, as equations over the crafted data's atoms (street, industry[, size])."""

    def __init__(self, atoms: dict[tuple, int]):
        self.atoms = [atom for atom, count in sorted(atoms.items()) if count]
        self.sizes = dict(atoms)
        self.equations: list[dict[int, Fraction]] = []

    def ask(self, engine, sql: str, grant, auditor, *, where=lambda atom: True, keys: tuple[int, ...] = (0, 1)):
        """Release ``sql`` and note each released sum (the last output) as the atoms it adds up: those ``where``
        keeps whose coordinates ``keys`` (per key output, in order) are the row's, less the keys rolled up."""
        answer = run(engine, guarded(engine, sql, grant), timeout_s=60, auditor=auditor)
        for row, rolled_up in zip(answer.rows, answer.rolled_up or [frozenset()] * len(answer.rows), strict=True):
            if row[-1] is None:
                continue
            fixed = {keys[p]: row[p] for p in range(len(keys)) if p not in rolled_up}
            self.equations.append({i: Fraction(1) for i, atom in enumerate(self.atoms)
                                   if where(atom) and all(atom[c] == v for c, v in fixed.items())})
        return answer

    def determined(self, target: list[tuple]) -> bool:
        """Whether some combination of the received sums is nonzero on the atoms ``target`` alone."""
        columns = [self.atoms.index(atom) for atom in target]
        with_target = self.equations + [{c: Fraction(1)} for c in columns]
        return _rank(self.equations) + len(columns) - _rank(with_target) > 0

    def protected_determined(self, k: int = K) -> list[tuple]:
        """Every set of one or two atoms of fewer than k taxpayers in all that the received sums determine."""
        small = [atom for atom in self.atoms if self.sizes[atom] < k]
        return [target for size in (1, 2) for target in itertools.combinations(small, size)
                if sum(self.sizes[a] for a in target) < k and self.determined(list(target))]


def _rank(rows: list[dict[int, Fraction]]) -> int:
    pivots: dict[int, dict[int, Fraction]] = {}
    for row in rows:
        vector = dict(row)
        while vector:
            lead = min(vector)
            if lead not in pivots:
                pivots[lead] = vector
                break
            factor = vector[lead] / pivots[lead][lead]
            for column, value in pivots[lead].items():
                vector[column] = vector.get(column, Fraction(0)) - factor * value
                if vector[column] == 0:
                    del vector[column]
    return len(pivots)


# A lone firm in (A, 99), every other cell of several firms: the lone firm is street A's total less (A, 10), and
# industry 99's total less (B, 99).
LONE_CELLS = {("A", "10"): 5, ("A", "99"): 1, ("B", "10"): 5, ("B", "99"): 5}


# ---------------------------------------------------------------------------------------------------------------
# Findings: fail on main.
# ---------------------------------------------------------------------------------------------------------------

def test_grouping_sets_of_the_grand_total_alone_is_refused_with_a_reason_not_a_crash(tmp_path, opened):
    """Attack: ``GROUP BY GROUPING SETS (())`` over aggregates only. The guard reads it as totals with no key,
    drops the GROUP BY, and add_totals then reads a GROUP BY that is not there: a KeyError, which the broker and
    the sandbox turn into INTERNAL with no reason. Nothing leaks, but a refusal must carry a registered reason
    (or the grand total be answered as the one cell it is)."""
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    sql = "SELECT SUM(revenue) AS revenue FROM tax.declarations GROUP BY GROUPING SETS (())"
    try:
        plan = guarded(engine, sql, _grant())
    except DsbrokerError as refused:
        assert refused.reason and refused.code != grpc.StatusCode.INTERNAL
        return
    answer = run(engine, plan, timeout_s=60, auditor=_auditor(opened, engine, tmp_path / "released.sqlite"))
    assert [row[0] for row in answer.rows] == [sum(r[3] for r in _firms(LONE_CELLS))]


@pytest.mark.parametrize("group_by", [
    # GROUP BY ALL is expanded first, replacing every term by the output keys: the CUBE (or a ROLLUP) is dropped.
    "ALL, CUBE (street_code)",
    "ALL, GROUPING SETS ((street_code), ())",
    # Hive's suffix form puts the sets in Group.args["grouping_sets"], not among the terms: expand_output_aliases
    # looks at the terms only, and reject_unsupported_syntax now lets any GROUPING SETS under GROUP BY through
    # (main before 0b030e0 refused this form: "GROUPING SETS is not allowed in a query").
    "street_code, industry_code GROUPING SETS ((street_code, industry_code), (street_code), ())",
    # ClickHouse's WITH TOTALS (Group.args["totals"]): a totals row the guard never reads.
    "street_code, industry_code WITH TOTALS",
])
def test_totals_in_a_form_the_guard_does_not_read_are_refused_not_answered_as_plain_cells(
        tmp_path: Path, opened: list, group_by: str) -> None:
    """Attack: totals written in a form the guard does not read. The guard accepts the query and the sandbox
    answers a plain GROUP BY of the keys, without the totals asked for and without a word (the README: what is not
    built is refused rather than silently ignored). Nothing leaks (plain cells are protected as such), but the
    answer is not the query's, and any later rule that reads Group.args would see totals nobody protects."""
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    sql = f"SELECT street_code, industry_code, SUM(revenue) AS revenue FROM tax.declarations GROUP BY {group_by}"
    with pytest.raises(DsbrokerError) as refused:
        guarded(engine, sql, _grant())
    assert refused.value.reason == "CONSTRUCT_NOT_ALLOWED"


# Street A has firms whose size class is NULL: a CUBE over (size_class, street_code) then has, for street A, a
# group whose size class is NULL and street A's total over the size classes, two rows with the same key values.
NULL_SIZES = "UPDATE tax.declarations SET size_class = NULL WHERE taxpayer_id LIKE 'A-10-%'"
SIZED_CUBE = ("SELECT size_class, street_code, SUM(revenue) AS revenue FROM tax.declarations "
              "GROUP BY CUBE (size_class, street_code)")
SIZED_CELLS = {("A", "10"): 4, ("A", "20"): 4, ("B", "10"): 4, ("B", "20"): 4}
SIZE_EDITS = (NULL_SIZES, "UPDATE tax.declarations SET size_class = 'large' WHERE taxpayer_id LIKE '%-20-%'")


def test_rows_with_equal_keys_come_in_an_order_that_does_not_depend_on_the_engines_row_order(tmp_path, opened):
    """Attack: a CUBE over a key with NULL groups. Rows are ordered by the keys' values only (release._order),
    and a NULL group and a total over that key have the same values, so which comes first is the engine's row
    order (a hash aggregate's, which differs between engines and from run to run). The order of an answer must
    be a function of what it releases; here the same cell table in another order gives another answer."""
    engine = _engine(tmp_path / "data", _firms(SIZED_CELLS), *SIZE_EDITS)
    opened.append(engine)
    plan = guarded(engine, SIZED_CUBE, _grant())
    result = engine.execute(plan.sql, timeout_s=60, max_rows=plan.engine_rows)
    answers = []
    for name, rows in (("as-read", list(result.rows)), ("reversed", list(reversed(result.rows)))):
        auditor = _auditor(opened, engine, tmp_path / f"{name}.sqlite")
        answer = audited_release(result.names, result.types, rows, plan, max_rows=plan.max_rows,
                                 deadline=float("inf"), auditor=auditor)
        answers.append([(row, sorted(marks)) for row, marks in zip(answer.rows, answer.rolled_up, strict=True)])
    ties = [row for row, _ in answers[0] if row[0] is None and row[1] == "A"]
    assert len(ties) == 2, "the data should have a NULL group and a total with the same keys"
    assert answers[0] == answers[1]


@pytest.fixture
def postgres_copy(tmp_path):
    """The SIZED_CELLS data (with its NULL size classes) in a fresh PostgreSQL database, read through a role
    that may only read the served tables; and the DuckDB file it came from."""
    import psycopg

    from sandbox.engine.postgres_engine import PostgresEngine

    source = _engine(tmp_path / "data", _firms(SIZED_CELLS), *SIZE_EDITS)
    path = tmp_path / "data" / "owner-data.duckdb"
    source.close()
    admin = postgres_admin()
    name, role = f"dsbroker_attack16_{uuid.uuid4().hex[:8]}", f"dsbroker_attack16_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name}")
    dsn = POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as database:
            # The lookups too: the served tables must exist for the engine's lockdown check.
            with duckdb.connect(str(path)) as local:
                for table in ("streets", "industries", "registration_types"):
                    local.execute(f"CREATE TABLE IF NOT EXISTS tax.{table} (code VARCHAR)")
                copy_to_postgres(local, database)
            database.execute(f"CREATE ROLE {role} LOGIN")
            database.execute(f"GRANT USAGE ON SCHEMA tax TO {role}")
            for table in SERVED:
                database.execute(f"GRANT SELECT ON {table} TO {role}")
            admin.execute(f"ALTER ROLE {role} SET temp_file_limit = '1GB'")
        engine = PostgresEngine(dsn.replace("postgres@", f"{role}@", 1), EngineLimits(pool_size=1), served=SERVED)
        reference = DuckDBEngine(path, EngineLimits(pool_size=1))
        yield engine, reference
        engine.close()
        reference.close()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_a_cube_over_a_key_with_null_groups_is_answered_alike_on_postgresql_and_duckdb(postgres_copy, tmp_path):
    """Engine parity: the same CUBE, each engine with a ledger of its own, releases the same rows in the same
    order. The cells are the same; the order of a NULL group and its total is each engine's row order (see the
    test above)."""
    engine, reference = postgres_copy
    answers = []
    for served in (reference, engine):
        auditor = Auditor(served, ReleasedCellLedger(tmp_path / f"{served.dialect}.sqlite"))
        try:
            answer = run(served, guarded(served, SIZED_CUBE, _grant()), timeout_s=60, auditor=auditor)
        finally:
            auditor.ledger.close()
        answers.append((answer.rows, answer.withheld, answer.rolled_up))
    same_cells = sorted(zip(*answers[0], strict=True), key=repr)
    assert sorted(zip(*answers[1], strict=True), key=repr) == same_cells
    assert answers[1] == answers[0]


# ---------------------------------------------------------------------------------------------------------------
# Attacks that the code stops: regression tests (pass on main).
# ---------------------------------------------------------------------------------------------------------------

def test_a_cube_does_not_give_the_lone_firm_away_through_either_margin(tmp_path, opened):
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    received = Received(LONE_CELLS)
    answer = received.ask(engine, CUBE, _grant(), _auditor(opened, engine, tmp_path / "released.sqlite"))
    assert answer.counts["audit"] > 0
    assert received.protected_determined() == []


def test_the_independent_checker_finds_the_lone_firm_without_the_auditor(tmp_path, opened):
    """The checker is not vacuous: a ROLLUP (secondary suppression, no auditor) and a plain query that differences
    it give the lone firm away."""
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    received = Received(LONE_CELLS)
    received.ask(engine, "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                 "GROUP BY ROLLUP (street_code, industry_code)", _grant(), None)
    received.ask(engine, "SELECT street_code, SUM(revenue) AS r FROM tax.declarations WHERE industry_code = '10' "
                 "GROUP BY street_code", _grant(), None, where=lambda atom: atom[1] == "10", keys=(0,))
    assert (("A", "99"),) in received.protected_determined()


def test_without_the_auditor_a_cube_is_refused_before_anything_is_released(tmp_path, opened):
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    for sql in (CUBE, CUBE.replace("CUBE (street_code, industry_code)",
                                   "GROUPING SETS ((street_code), (industry_code))")):
        with pytest.raises(DsbrokerError) as refused:
            run(engine, guarded(engine, sql, _grant()), timeout_s=60, auditor=None)
        assert refused.value.reason == "TOTALS_NEED_AUDIT"
        assert "99" not in str(refused.value) and refused.value.metadata.get("table") == "tax.declarations"


# The lone firm (A, 99) again, with street B's cells such that the CUBE releases the margins by industry (fixed
# code -2 in the ledger: the second key alone) and street A's total, and withholds the inner cells.
def test_a_cubes_industry_margins_stay_audited_after_a_sandbox_restart(tmp_path, opened):
    """Attack: a CUBE releases industry 99's total (a cell fixing the second key only: a negative fixed code in
    the ledger); the sandbox restarts; street B's industry table would then give the lone firm as industry 99's
    total less (B, 99). The ledger read back after the restart must still hold the margin."""
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    ledger_path = tmp_path / "released.sqlite"
    received = Received(LONE_CELLS)
    first = Auditor(engine, ReleasedCellLedger(ledger_path))
    cube = received.ask(engine, CUBE, _grant(), first)
    first.ledger.close()
    released_margins = [row for row, marks in zip(cube.rows, cube.rolled_up, strict=True)
                        if marks == frozenset({0}) and row[-1] is not None]
    assert any(row[1] == "99" for row in released_margins), "the CUBE should release industry 99's total"
    with _sqlite(ledger_path) as ledger:
        assert ledger.execute("SELECT COUNT(*) FROM cells WHERE fixed < 0").fetchone()[0] > 0

    restarted = _auditor(opened, engine, ledger_path)
    again = received.ask(engine, CUBE, _grant(), restarted)  # the same answer, from the ledger read back
    assert (again.rows, again.withheld) == (cube.rows, cube.withheld)
    received.ask(engine, "SELECT industry_code, SUM(revenue) AS r FROM tax.declarations WHERE street_code = 'B' "
                 "GROUP BY industry_code", _grant(), restarted, where=lambda atom: atom[0] == "B", keys=(1,))
    received.ask(engine, "SELECT street_code, SUM(revenue) AS r FROM tax.declarations WHERE industry_code = '10' "
                 "GROUP BY street_code", _grant(), restarted, where=lambda atom: atom[1] == "10", keys=(0,))
    assert received.protected_determined() == []


def _sqlite(path: Path):
    import contextlib
    import sqlite3

    return contextlib.closing(sqlite3.connect(str(path)))


THREE_WAY = {("A", "10", "small"): 1, ("A", "10", "large"): 6, ("A", "20", "small"): 5, ("A", "20", "large"): 4,
             ("B", "10", "small"): 4, ("B", "10", "large"): 5, ("B", "20", "small"): 6, ("B", "20", "large"): 2}


def _three_way_rows() -> list[tuple]:
    rows = []
    for number, ((street, industry, size), count) in enumerate(sorted(THREE_WAY.items())):
        for n in range(count):
            rows.append((f"{street}-{industry}-{size}-{n}", dt.date(2025, 1, 1), street,
                         10_000 * (number + 1) + 7 * n + 1, 10))
    return rows


def test_the_three_two_way_margins_then_the_detail_table_do_not_open_a_small_cell(tmp_path, opened):
    """Attack: a 2x2x2 table's three two-way margins (GROUPING SETS of pairs: each inner cell is in three
    equations, the README's non-tree case), then the detail table (every inner cell but the small ones), then a
    CUBE. With the three margins, any seven inner cells give the eighth."""
    engine = _engine(tmp_path / "data", _three_way_rows(),
                     "UPDATE tax.declarations SET size_class = split_part(taxpayer_id, '-', 3)")
    opened.append(engine)
    auditor = _auditor(opened, engine, tmp_path / "released.sqlite")
    received = Received(THREE_WAY)
    select = "SELECT street_code, industry_code, size_class, SUM(revenue) AS r FROM tax.declarations "
    received.ask(engine, select + "GROUP BY GROUPING SETS ((street_code, industry_code), (street_code, size_class), "
                 "(industry_code, size_class))", _grant(), auditor, keys=(0, 1, 2))
    received.ask(engine, select + "GROUP BY street_code, industry_code, size_class", _grant(), auditor,
                 keys=(0, 1, 2))
    received.ask(engine, select + "GROUP BY CUBE (street_code, industry_code, size_class)", _grant(), auditor,
                 keys=(0, 1, 2))
    assert received.protected_determined() == []


def test_a_cube_of_a_key_and_a_bucket_of_it_does_not_open_a_small_cell(tmp_path, opened):
    """Attack: CUBE (industry, a CASE bucket of the same industry, street): the bucket's totals are sums of the
    industries' (keys that are functions of one another), and GROUPING SETS by the bucket alone difference the
    small cell out of a street's total."""
    cells = {("A", "10"): 5, ("A", "20"): 1, ("A", "30"): 4, ("B", "10"): 5, ("B", "20"): 5, ("B", "30"): 5}
    engine = _engine(tmp_path / "data", _firms(cells))
    opened.append(engine)
    auditor = _auditor(opened, engine, tmp_path / "released.sqlite")
    received = Received(cells)
    bucket = "CASE WHEN industry_code IN ('10', '20') THEN 'low' ELSE 'high' END"
    low = ("10", "20")
    answer = run(engine, guarded(engine, f"SELECT street_code, {bucket} AS band, industry_code, SUM(revenue) AS r "
                                 f"FROM tax.declarations GROUP BY CUBE (street_code, band, industry_code)", _grant()),
                 timeout_s=60, auditor=auditor)
    for row, marks in zip(answer.rows, answer.rolled_up, strict=True):
        if row[-1] is None:
            continue
        street, band, industry = (None if p in marks else row[p] for p in range(3))
        received.equations.append({i: Fraction(1) for i, atom in enumerate(received.atoms)
                                   if street in (None, atom[0]) and industry in (None, atom[1])
                                   and band in (None, "low" if atom[1] in low else "high")})
    received.ask(engine, "SELECT street_code, SUM(revenue) AS r FROM tax.declarations WHERE industry_code IN ('10', "
                 "'30') GROUP BY street_code", _grant(), auditor, where=lambda atom: atom[1] in ("10", "30"),
                 keys=(0,))
    assert received.protected_determined() == []


def test_a_cube_under_suppressed_drop_leaves_small_rows_out_and_opens_nothing(tmp_path, opened):
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    received = Received(LONE_CELLS)
    grant = _grant(suppression="drop")
    answer = received.ask(engine, CUBE, grant, _auditor(opened, engine, tmp_path / "released.sqlite"))
    assert ("A", "99", None) not in answer.rows and all(row[:2] != ("A", "99") for row in answer.rows)
    received.ask(engine, "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                 "GROUP BY GROUPING SETS ((street_code), (industry_code), ())", grant, _auditor(
                     opened, engine, tmp_path / "released.sqlite"))
    assert received.protected_determined() == []


def test_a_laxer_grants_cube_is_no_known_before_to_a_stricter_one(tmp_path, opened):
    """Attack: a second department under k = 2 asks the CUBE (its cells of two firms pass there); the first, under
    k = 3, then asks the detail table and the margins: what the laxer grant received does not count as known to
    the stricter one, so the stricter answers alone must not give away a cell of fewer than 3."""
    cells = {("A", "10"): 5, ("A", "99"): 2, ("B", "10"): 5, ("B", "99"): 5}
    engine = _engine(tmp_path / "data", _firms(cells))
    opened.append(engine)
    auditor = _auditor(opened, engine, tmp_path / "released.sqlite")
    laxer = Received(cells)
    laxer.ask(engine, CUBE, _grant(2), auditor)
    stricter = Received(cells)
    stricter.ask(engine, "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                 "GROUP BY street_code, industry_code", _grant(3), auditor)
    stricter.ask(engine, "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                 "GROUP BY GROUPING SETS ((street_code), (industry_code))", _grant(3), auditor)
    assert stricter.protected_determined(3) == []


@pytest.mark.parametrize("group_by, reason", [
    ("GROUPING SETS ((street_code), ROLLUP (street_code, industry_code))", "CONSTRUCT_NOT_ALLOWED"),
    ("GROUPING SETS ((street_code, industry_code), (industry_code, street_code))", "TOTALS_SET_REPEATED"),
    ("GROUPING SETS ((street_code), (1), (industry_code))", "TOTALS_KEY_REPEATED"),
    ("CUBE (street_code, industry_code, 1)", "TOTALS_KEY_REPEATED"),
    ("CUBE ((street_code, industry_code))", "CONSTRUCT_NOT_ALLOWED"),
    ("GROUPING SETS (((street_code, industry_code)))", "CONSTRUCT_NOT_ALLOWED"),
    ("CUBE (street_code), industry_code", "CONSTRUCT_NOT_ALLOWED"),
    ("GROUPING SETS ((street_code), (industry_code)) HAVING SUM(revenue) > 0", "TOTALS_HAVING_NOT_ALLOWED"),
    ("CUBE (street_code, industry_code) LIMIT 3", "TOTALS_LIMIT_NOT_ALLOWED"),
])
def test_forms_of_totals_the_sandbox_cannot_protect_are_refused(tmp_path: Path, opened: list, group_by: str,
                                                                 reason: str) -> None:
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    with pytest.raises(DsbrokerError) as refused:
        guarded(engine, f"SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations GROUP BY "
                        f"{group_by}", _grant())
    assert refused.value.reason == reason


def test_grouping_of_keys_in_another_order_than_the_grouping_sets_is_the_engines(tmp_path, opened):
    """GROUPING SETS that are a ROLLUP of (industry, street) while the query outputs street first and asks
    GROUPING(street, industry): the sandbox computes each row's GROUPING() from its own column, in the order the
    caller wrote it, as the engine would."""
    engine = _engine(tmp_path / "data", _firms(SIZED_CELLS))
    opened.append(engine)
    sql = ("SELECT street_code, industry_code, GROUPING(street_code, industry_code) AS g, GROUPING(street_code) AS s, "
           "SUM(revenue) AS r FROM tax.declarations GROUP BY GROUPING SETS ((industry_code), (industry_code, "
           "street_code), ())")
    answer = run(engine, guarded(engine, sql, _grant()), timeout_s=60, auditor=None)
    with duckdb.connect(str(tmp_path / "data" / "owner-data.duckdb"), read_only=True) as direct:
        truth = direct.execute(sql).fetchall()
    assert sorted(answer.rows, key=repr) == sorted(truth, key=repr)


def test_grouping_sets_that_are_a_rollup_in_another_key_order_keep_secondary_suppression(tmp_path, opened):
    """Attack, with the auditor off: GROUPING SETS ((industry), (industry, street), ()) are a ROLLUP of (industry,
    street) while the query outputs street first; secondary suppression must build its tree in the sets' order,
    or industry 99's total less (B, 99) is the lone firm."""
    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    received = Received(LONE_CELLS)
    for sets in ("(industry_code), (industry_code, street_code), ()",
                 "(industry_code, street_code), (industry_code), ()"):
        answer = received.ask(engine, "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                              f"GROUP BY GROUPING SETS ({sets})", _grant(), None)
        assert answer.counts["secondary"] > 0
    assert received.protected_determined() == []


def test_a_late_declaration_after_a_cube_is_not_its_margins_difference(tmp_path, opened):
    """Attack: a CUBE is released; a new firm then declares in (B, 10); street B's total, industry 10's or the
    grand total asked now, less the CUBE's, would be the new firm's revenue. The ledger's released values are
    stale there, and the auditor keeps a stale cell from becoming derivable."""
    cells = {("A", "10"): 5, ("A", "20"): 5, ("B", "10"): 5, ("B", "20"): 5}
    path = tmp_path / "data"
    engine = _engine(path, _firms(cells))
    ledger = tmp_path / "released.sqlite"
    first = Auditor(engine, ReleasedCellLedger(ledger))
    cube = run(engine, guarded(engine, CUBE, _grant()), timeout_s=60, auditor=first)
    first.ledger.close()
    engine.close()
    before = {(row[0], row[1]): row[2] for row in cube.rows}
    with duckdb.connect(str(path / "owner-data.duckdb")) as connection:
        connection.execute("INSERT INTO tax.declarations SELECT 'NEW-1', period, district_code, street_code, '10', "
                           "industry_section, registration_type, size_class, 123457, vat_paid, cit_paid, iit_withheld, "
                           "employees FROM tax.declarations WHERE taxpayer_id = 'B-10-0'")
    engine = DuckDBEngine(path / "owner-data.duckdb", EngineLimits(pool_size=1))
    opened.append(engine)
    auditor = _auditor(opened, engine, ledger)
    learned = []
    for sql in ("SELECT street_code, SUM(revenue) AS r FROM tax.declarations GROUP BY street_code",
                "SELECT industry_code, SUM(revenue) AS r FROM tax.declarations GROUP BY industry_code",
                "SELECT street_code, industry_code, SUM(revenue) AS r FROM tax.declarations "
                "GROUP BY GROUPING SETS ((street_code), (industry_code), ())",
                "SELECT SUM(revenue) AS r FROM tax.declarations"):
        answer = run(engine, guarded(engine, sql, _grant()), timeout_s=60, auditor=auditor)
        learned += [row for row in answer.rows if row[-1] is not None]
    differences = {value - before[key] for key, value in (
        [((row[0], None), row[1]) for row in learned if len(row) == 2 and row[0] in ("A", "B")]
        + [((None, row[0]), row[1]) for row in learned if len(row) == 2 and row[0] in ("10", "20")]
        + [((row[0], row[1]), row[2]) for row in learned if len(row) == 3]
        + [((None, None), row[0]) for row in learned if len(row) == 1]) if key in before}
    assert 123457 not in differences


@pytest.mark.parametrize("changes, select, reason", [
    ({"dominance": "rule"}, "SUM(revenue)", "TOTALS_NOT_ALLOWED"),
    ({"noise": "noise"}, "SUM(revenue)", "TOTALS_NOT_ALLOWED"),
    ({"min_max": {"revenue": ("MAX",)}}, "MAX(revenue)", "TOTALS_EXTREME_NOT_ALLOWED"),
    ({"encrypted": True, "results": ("aggregate", "encrypted")}, "SUM(revenue)", "ENCRYPTED_TOTALS_NOT_ALLOWED"),
])
def test_a_cube_is_refused_where_its_cells_are_not_plain_sums(tmp_path: Path, opened: list, changes: dict,
                                                              select: str, reason: str) -> None:
    """The dominance rule, noise, MIN/MAX and encrypted results do not combine with CUBE or GROUPING SETS
    (their cells are not plain sums the auditor can solve, or cannot be withheld one by one)."""
    from dsbroker.guard import guard
    from dsbroker.policy.model import Dominance
    from tests.conftest import XUANWU
    from tests.engine_cells import NOISE

    engine = _engine(tmp_path / "data", _firms(LONE_CELLS))
    opened.append(engine)
    encrypted = bool(changes.pop("encrypted", False))
    if changes.get("dominance") == "rule":
        changes["dominance"] = Dominance(n=2, k=85.0)
    if changes.get("noise") == "noise":
        changes["noise"] = NOISE
    grant = _grant(**changes)
    column_types = {table: dict(engine.columns(table)) for table in SERVED}
    for group_by in ("CUBE (street_code, industry_code)", "GROUPING SETS ((street_code), (industry_code))"):
        with pytest.raises(DsbrokerError) as refused:
            guard(f"SELECT street_code, industry_code, {select} AS v FROM tax.declarations GROUP BY {group_by}", grant,
                  district=XUANWU, department="xuanwu-fgw", engine_dialect=engine.dialect, column_types=column_types,
                  encrypted=encrypted)
        assert refused.value.reason == reason


def test_grouping_sets_of_two_buckets_of_one_column_do_not_difference_a_small_industry_out(tmp_path, opened):
    """Attack: two CASE buckets of the industry as grouping sets, (10 | rest) and (20 | rest): the first's rest
    less the second's bucket is industry 99, one firm; then the same buckets one query at a time."""
    cells = {("A", "10"): 5, ("A", "20"): 5, ("A", "99"): 1}
    engine = _engine(tmp_path / "data", _firms(cells))
    opened.append(engine)
    auditor = _auditor(opened, engine, tmp_path / "released.sqlite")
    received = Received(cells)
    first = "CASE WHEN industry_code IN ('10') THEN 'x' ELSE 'y' END"
    second = "CASE WHEN industry_code IN ('20') THEN 'x' ELSE 'y' END"

    def note(answer, buckets: list[tuple[int, str]]) -> None:
        for row, marks in zip(answer.rows, answer.rolled_up or [frozenset()] * len(answer.rows), strict=True):
            if row[-1] is None:
                continue
            for position, industry in buckets:
                if position not in marks:
                    inside = row[position] == "x"
                    received.equations.append({i: Fraction(1) for i, atom in enumerate(received.atoms)
                                               if (atom[1] == industry) == inside})

    note(run(engine, guarded(engine, f"SELECT {first} AS b1, {second} AS b2, SUM(revenue) AS r FROM tax.declarations "
                             "GROUP BY GROUPING SETS ((b1), (b2))", _grant()), timeout_s=60, auditor=auditor),
         [(0, "10"), (1, "20")])
    for bucket, industry in ((first, "10"), (second, "20")):
        note(run(engine, guarded(engine, f"SELECT {bucket} AS b, SUM(revenue) AS r FROM tax.declarations GROUP BY b",
                                 _grant()), timeout_s=60, auditor=auditor), [(0, industry)])
    assert len(received.equations) >= 2
    assert received.protected_determined() == []


def test_a_small_null_group_is_not_its_total_less_the_other_groups(tmp_path, opened):
    """Attack: in CUBE (size_class, street_code) one firm of street A has no size class (a NULL group); street
    A's total over the size classes, less its 'large' group, would be that firm. The auditor tells the NULL group
    (both keys fixed, one NULL) from the total (the street fixed alone) and withholds what it takes."""
    cells = {("A", "10"): 1, ("A", "20"): 5, ("B", "10"): 5, ("B", "20"): 5}
    engine = _engine(tmp_path / "data", _firms(cells), "UPDATE tax.declarations SET size_class = NULL "
                     "WHERE taxpayer_id LIKE '%-10-%'", "UPDATE tax.declarations SET size_class = 'large' "
                     "WHERE taxpayer_id LIKE '%-20-%'")
    opened.append(engine)
    auditor = _auditor(opened, engine, tmp_path / "released.sqlite")
    received = Received(cells)  # industry 10 is the NULL size class here, 20 the large one
    answer = run(engine, guarded(engine, SIZED_CUBE, _grant()), timeout_s=60, auditor=auditor)
    for row, marks in zip(answer.rows, answer.rolled_up, strict=True):
        if row[-1] is None:
            continue
        size, street = (None if 0 in marks else ("20" if row[0] == "large" else "10"),
                        None if 1 in marks else row[1])
        received.equations.append({i: Fraction(1) for i, atom in enumerate(received.atoms)
                                   if size in (None, atom[1]) and street in (None, atom[0])})
    assert answer.counts["audit"] > 0
    assert received.protected_determined() == []


@pytest.mark.parametrize("sql", [
    "SELECT CASE WHEN street_code IN ('A') THEN 'a' ELSE 'b' END AS area, strftime(period, '%Y-%m') AS month, "
    "SUM(revenue) AS r, COUNT(DISTINCT taxpayer_id) AS n FROM tax.declarations GROUP BY CUBE (area, month)",
    "SELECT size_class, street_code, industry_code, GROUPING(industry_code, size_class) AS g, AVG(revenue) AS r "
    "FROM tax.declarations GROUP BY GROUPING SETS ((size_class), (street_code, industry_code), ())",
    "SELECT year(period) AS y, street_code, SUM(revenue) AS r FROM tax.declarations "
    "GROUP BY GROUPING SETS ((y), (street_code))",
])
def test_cube_and_grouping_sets_release_the_same_cells_on_postgresql(postgres_copy, tmp_path: Path,
                                                                       sql: str) -> None:
    """Engine parity of the new forms with bucket, date-text, date-part and GROUPING() outputs: the same cells,
    withheld and rolled up alike (compared as sets of rows: their order is the test above's finding)."""
    engine, reference = postgres_copy
    answers = []
    for served in (reference, engine):
        auditor = Auditor(served, ReleasedCellLedger(tmp_path / f"{served.dialect}-{uuid.uuid4().hex[:6]}.sqlite"))
        try:
            answer = run(served, guarded(served, sql, _grant()), timeout_s=60, auditor=auditor)
        finally:
            auditor.ledger.close()
        answers.append(sorted(zip(answer.rows, answer.withheld, answer.rolled_up, strict=True), key=repr))
    assert answers[0], "the query should release rows"
    assert answers[1] == answers[0]
