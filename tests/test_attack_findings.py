"""Findings of an outside review of the guard and the sandbox's release, each a regression test.

Each test failed on the code it was written against and says, in its docstring, how the attack works.
Most compare two neighbouring databases that differ only in what the released cells do not say (one
taxpayer's existence or amount inside a withheld cell): a query must succeed on both or on neither, and
answer the same on both. The rest bound what one short query may cost the guard, or require a refusal
instead of an INTERNAL error.

The tests run the guard and ``sandbox.disclosure.release.run`` (or
``sandbox.disclosure.encryption.encrypted_release``) on real DuckDB files; the noise test runs a real
sandbox and broker, because the cap it attacks lives in the sandbox's servicer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

import duckdb
import pytest

from broker.client.sdk import BrokerClient
from dsbroker.errors import DsbrokerError
from dsbroker.guard import guard
from broker.dev.keys import sandbox_settings
from dsbroker.policy.model import Dominance
from broker.server import start_broker
from sandbox.settings import SandboxSettings
from sandbox.disclosure.encryption import encrypted_release
from sandbox.engine.duckdb_engine import DuckDBEngine
from sandbox.disclosure.release import run
from sandbox.server import start_sandbox
from tests.neighbours import JAN, TYPES, guarded_for, outcome, street
from tests.conftest import (DISCLOSURE, GRANT, XUANWU, broker_settings_for, client_tls, declarations_file, dev_keys,
                            policies_with, token_for)




# -- 1. date literals that Python reads and DuckDB does not: a lazy engine error is an existence oracle --

@pytest.mark.parametrize("condition", ["period = DATE '20250101'", "period = '20250101'", "period = '2025-W01-1'",
                                       "period BETWEEN '2025-01-01' AND '20251231'",
                                       "date_trunc('month', period) = '2025-01-01T12'"])
def test_a_date_literal_the_engine_cannot_read_is_no_existence_oracle(engines, policy, condition):
    """reject_mistyped_filters checks a date literal with Python's ``date.fromisoformat``, which (3.11+)
    also reads the basic form ``20250101``, week dates ``2025-W01-1`` and ``T12`` hours; DuckDB reads none
    of them. DuckDB does not fold the failing cast at bind time: it evaluates it per row, after the other
    conjuncts. So ``WHERE street_code = 'X' AND period = DATE '20250101'`` fails (EXECUTION_FAILED) if
    and only if some row of the caller's district passes ``street_code = 'X'``: a yes/no answer about a
    cell the threshold withholds, in every result mode (drop, encrypted, noise: a refund, no budget spent).
    With any other filter columns (registration_type, gridded measure ranges) it probes one taxpayer:
    ``AND employees BETWEEN 0 AND 49`` reads the lone taxpayer's employees to the grid."""
    sql = f"SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' AND {condition}"
    base = street("A", 12) + street("B", 12)
    absent, present = engines("absent", base), engines("present", base + street("X", 1))
    try:
        guarded = guarded_for(sql, policy)
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")  # a refusal before any data is read
        return
    assert outcome(absent, guarded) == outcome(present, guarded)


def test_a_measure_range_with_an_unreadable_date_reads_a_lone_taxpayer(tmp_path, policy):
    """The same lazy error with a gridded measure range in the conjunction (ranges: employees, grid 50):
    the lone taxpayer of street X declares 30 or 70 employees. Its cell is withheld (one taxpayer) in
    both databases, yet the error says which band of the grid its employees are in."""
    sql = ("SELECT COUNT(*) AS c FROM tax.declarations WHERE street_code = 'X' AND employees BETWEEN 0 AND 49 "
           "AND period = '20250101'")
    try:
        guarded = guarded_for(sql, policy, ranges={"employees": 50})
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")  # a refusal before any data is read
        return
    found = {}
    for employees in (30, 70):
        directory = tmp_path / f"band-{employees}"
        directory.mkdir()
        data = declarations_file(directory / "owner-data.duckdb", street("A", 12) + street("X", 1))
        with duckdb.connect(str(data)) as connection:
            connection.execute("UPDATE tax.declarations SET employees = ? WHERE street_code = 'X'", [employees])
        engine = DuckDBEngine(data)
        try:
            found[employees] = outcome(engine, guarded)
        finally:
            engine.close()
    assert found[30] == found[70], found


# -- 2. encrypted mode: the engine's cut counts the groups that never leave the sandbox ------------------

def test_encrypted_groups_released_do_not_depend_on_a_hidden_small_group(engines, encrypted_policy):
    """Encrypted results leave out groups under the threshold "so that not even the broker learns which
    groups were small". But the guard marks (suppression is forced to mark) and the engine still orders
    by the keys and cuts at LIMIT max_groups + 1, small groups included; the sandbox drops the small ones
    only afterwards. So one taxpayer alone in street B pushes street C out of the answer and flips the
    truncated flag: which groups come back says that B exists. With the shipped cap (5000) an attacker
    tunes a GROUP BY with IN filters to sit at the cap."""
    granted = dataclasses.replace(encrypted_policy, results=("aggregate", "encrypted"), max_groups=2)
    sql = "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY street_code"
    guarded = guard(sql, granted, district=XUANWU, department="xuanwu-fgw", encrypted=True, column_types=TYPES)
    found = {}
    for name, rows in {"without": street("A", 12) + street("C", 12),
                       "with": street("A", 12) + street("B", 1) + street("C", 12)}.items():
        engine = engines(name, rows)
        # As the sandbox runs it: one row past the cap, the released groups first.
        result = engine.execute(guarded.sql, timeout_s=30, max_rows=guarded.max_rows + 1)
        release = encrypted_release(result.names, result.types, result.rows, guarded, partitions=1,
                                    dataset="tax.declarations")
        found[name] = (release.keys, release.truncated)
    assert found["without"] == found["with"], found


# -- 3. drop mode with totals: TOTALS_TOO_LARGE counts the rows it drops ---------------------------------

def test_the_totals_cap_does_not_count_rows_that_are_dropped(engines, totals_policy):
    """Under ``suppressed: drop`` with ROLLUP the engine returns every row, small ones included (secondary
    suppression needs them), and the sandbox refuses TOTALS_TOO_LARGE when they exceed max_groups, before
    dropping anything. The two databases below release the very same rows (A, C, D and a total of 39
    declarations; every small street is dropped) but hold two and three small streets: one answers, the
    other is refused. Sitting at the cap, a caller counts dropped cells, i.e. learns that some taxpayer
    declared in a street/industry/period the answer leaves out."""
    sql = "SELECT street_code, COUNT(*) AS c, SUM(vat_paid) AS v FROM tax.declarations GROUP BY ROLLUP (street_code)"
    big = street("A", 12) + street("C", 12) + street("D", 12)
    two_small = big + street("B", 1) + [("E-0", JAN, "E", 100, 10), ("E-0", dt.date(2025, 2, 1), "E", 100, 10)]
    three_small = big + street("B", 1) + street("E", 1) + street("F", 1)
    guarded = guarded_for(sql, totals_policy, suppression="drop", max_groups=6)
    found = {name: outcome(engines(name, rows), guarded)
             for name, rows in {"two": two_small, "three": three_small}.items()}
    assert found["two"] == found["three"], found


# -- 4. noise: the sandbox's cap on cells is an exact, free count of cells --------------------------------

NOISE_YAML = ("disclosure:\n  min_entities: 10\n  noise: {epsilon: 1.0, budget: 3.0, rows_per_entity: 2, "
              "bounds: {revenue: [0, 1000000], vat_paid: [0, 100000]}}")


@contextlib.contextmanager
def noisy_serving(directory, rows, *, max_rows: int):
    directory.mkdir()
    data = declarations_file(directory / "owner-data.duckdb", rows)
    policies = policies_with(directory, DISCLOSURE, NOISE_YAML)
    sandbox = start_sandbox(SandboxSettings(listen="127.0.0.1:0", data=str(data), datasets=("tax.declarations",),
                                            privacy_ledger=str(directory / "ledger.sqlite"), max_rows=max_rows,
                                            **sandbox_settings(dev_keys())))
    try:
        broker = start_broker(broker_settings_for(sandbox.port, directory / "log.sqlite", policies=policies))
        try:
            with BrokerClient(f"127.0.0.1:{broker.port}", token=token_for(), tls=client_tls()) as client:
                yield client
        finally:
            broker.stop()
    finally:
        sandbox.stop()


def test_the_noise_cell_cap_is_not_an_exact_count_of_cells(tmp_path):
    """Under noise the engine's cells are not cut, and the sandbox refuses NOISE_TOO_MANY_CELLS when there
    are more than ``max_rows * 10`` of them, counted exactly, before the noisy threshold, lone taxpayers'
    cells included; the refusal refunds the budget. So a free, noise-free, repeatable yes/no tells whether
    one more taxpayer declared in a new cell: differential privacy is gone. (The sandbox's max_rows is set
    to 1 here, a cap of 10 cells; with the default a caller tunes a finer GROUP BY to sit at 100,000.)"""
    sql = "SELECT street_code, COUNT(*) AS c FROM tax.declarations GROUP BY street_code"
    ten = [row for n in range(10) for row in street(f"S{n}", 20)]
    found = {}
    for name, rows in {"without": ten, "with": ten + street("Z", 1)}.items():
        with noisy_serving(tmp_path / name, rows, max_rows=1) as client:
            try:
                client.query(GRANT, sql)
                found[name] = "answered"
            except DsbrokerError as error:
                found[name] = ("refused", error.reason)
    assert found["without"] == found["with"], found


# -- 5. MAX over totals: secondary suppression does not protect an extreme --------------------------------

def test_the_max_of_a_released_total_does_not_name_a_withheld_taxpayer(engines, totals_policy):
    """Secondary suppression reasons about sums: with X (one taxpayer) withheld it withholds sibling B
    too, so X is not the total less its released parts. A MAX is not a sum: the total's MAX is the
    largest of its parts', so when it exceeds every released street's MAX it is X's or B's largest
    amount. One more query, ``GROUP BY street_code`` without totals, releases B's MAX (B has 11
    taxpayers), and the total's MAX is then the lone taxpayer's exact revenue. The two databases differ
    only in that taxpayer's revenue; the ROLLUP's released cells differ."""
    sql = ("SELECT street_code, MAX(revenue) AS largest, COUNT(*) AS c FROM tax.declarations "
           "GROUP BY ROLLUP (street_code) ORDER BY street_code")
    base = street("A", 12, revenue=500) + street("B", 11, revenue=400) + street("C", 15, revenue=300)
    try:
        guarded = guarded_for(sql, totals_policy, min_max={"revenue": ("MIN", "MAX")})
    except DsbrokerError as error:
        assert error.metadata.get("rule", "").startswith("reject_")  # a refusal before any data is read
        return
    found = {revenue: outcome(engines(f"r{revenue}", base + [("X-0", JAN, "X", revenue, 10)]), guarded)
             for revenue in (100, 10 ** 9)}
    assert found[100] == found[10 ** 9], found


# -- 6. the guard's own cost: short literals, and expansions of aliases and positions ---------------------

def _guarded_within(sql: str, policy, **overrides):
    """What the guard makes of ``sql``, or its refusal; fails if it has not answered in a minute.

    Not a timing test: the fixed guard answers these in milliseconds, the broken one took minutes, and a
    minute leaves any loaded machine ample room."""
    import threading

    outcome_: list = []

    def attempt():
        try:
            outcome_.append(guarded_for(sql, policy, **overrides))
        except Exception as error:  # noqa: BLE001 - a refusal, or an INTERNAL error (a finding of its own)
            outcome_.append(error)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)
    assert outcome_, "the guard did not answer within a minute"
    return outcome_[0]


def test_a_short_coefficient_with_a_huge_exponent_is_refused_at_once(policy):
    """number_literal limits a literal to 60 characters, then computes ``Fraction(Decimal(text))`` before
    checking its range: ``1e9999999`` (9 characters) builds a ten-million-digit integer, 9 s of CPU;
    ``1e99999999`` takes minutes. The guard runs twice per query (broker and sandbox), and its deadline is
    only checked between rules, so a requester ties up workers with a 60-byte query."""
    result = _guarded_within("SELECT SUM(vat_paid) * 1e9999999 AS x FROM tax.declarations", policy)
    assert isinstance(result, DsbrokerError) and result.reason == "NUMBER_OUT_OF_RANGE"


@pytest.mark.parametrize("bound", ["1e5000", "9" * 5000, "1e9999999999"])
def test_a_huge_range_bound_is_a_refusal_not_an_internal_error(policy, bound):
    """enforce_range_grid snaps a measure range to its grid with Decimal arithmetic on the caller's
    literal, which no rule bounds: ``1e5000`` makes an int that str() refuses (ValueError, beyond
    Python's 4,300 digits), ``1e9999999999`` a decimal.Overflow; both reach the caller as INTERNAL.
    ``1e999999`` (8 characters) costs 34 s of CPU first."""
    result = _guarded_within(f"SELECT COUNT(*) AS c FROM tax.declarations WHERE employees BETWEEN 0 AND {bound}",
                             policy, ranges={"employees": 50})
    assert isinstance(result, DsbrokerError) and result.reason == "NUMBER_OUT_OF_RANGE", \
        f"{type(result).__name__}: {result}"


def test_expanding_positions_and_aliases_is_bounded(policy):
    """parse caps a query at 20,000 nodes, but expand_output_aliases then copies the output named by each
    ORDER BY position (or alias, in HAVING and ORDER BY) once per reference: a 1,000-node output named
    400 times is 400,000 nodes that every later rule walks (split_cells compares each with every key).
    Here a 5 kB query takes about 10 s to guard (a 9 kB one 27 s, and it grows as the product), with
    the deadline checked only between rules; the limits should hold after the expansion too."""
    items = ["SUM(vat_paid)"] * 256
    while len(items) > 1:  # a balanced sum keeps the nesting shallow
        items = [f"({items[i]} + {items[i + 1]})" if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    sql = (f"SELECT street_code, {items[0]} AS a FROM tax.declarations GROUP BY street_code ORDER BY "
           + ", ".join(["2"] * 400))
    result = _guarded_within(sql, policy)
    assert isinstance(result, DsbrokerError) and result.reason == "QUERY_TOO_COMPLEX", f"{type(result).__name__}"


# -- 7. crashes on column types the guard accepts ---------------------------------------------------------

def _typed_file(directory, ddl: str, rows: list[tuple], insert: str):
    directory.mkdir()
    path = directory / "owner-data.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA tax")
        connection.execute(ddl)
        connection.executemany(insert, rows)
    return path


def test_the_dominance_rule_on_a_double_measure_never_fails_on_a_withheld_cell(tmp_path, policy):
    """column_types.summable accepts DOUBLE measures ("DuckDB adds doubles to infinity, never to an
    error"), but the dominance test converts each cell's total with ``Fraction(total)``, for every cell,
    withheld ones included: an infinite or NaN total raises OverflowError / ValueError, an INTERNAL
    error that happens only when a withheld cell (here one taxpayer) holds such amounts."""
    sql = "SELECT street_code, SUM(revenue) AS r FROM tax.declarations GROUP BY street_code"
    ddl = ("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, period DATE, district_code VARCHAR, "
           "street_code VARCHAR, revenue DOUBLE)")
    insert = "INSERT INTO tax.declarations VALUES (?, DATE '2025-01-01', '320102', ?, ?)"
    granted = dataclasses.replace(policy, dominance=Dominance(n=2, k=85.0))
    types = {"tax.declarations": {"street_code": "VARCHAR", "period": "DATE", "revenue": "DOUBLE",
                                  "taxpayer_id": "VARCHAR", "district_code": "VARCHAR"}}
    guarded = guard(sql, granted, district=XUANWU, department="xuanwu-fgw", column_types=types)
    big = [(f"A-{n}", "A", 100.0) for n in range(12)]
    found = {}
    for name, lone in {"ordinary": [("X-0", "X", 100.0)],
                       "huge": [("X-0", "X", 1.7e308), ("X-0", "X", 1.7e308)]}.items():
        engine = DuckDBEngine(_typed_file(tmp_path / name, ddl, big + lone, insert))
        try:
            found[name] = outcome(engine, guarded)
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            found[name] = ("crashed", type(error).__name__)
        finally:
            engine.close()
    assert found["ordinary"] == found["huge"], found


def test_totals_over_a_decimal_group_key_are_answered(tmp_path, totals_policy):
    """A DECIMAL group key is read with ``Fraction(key)``, and a ROLLUP's total rows hold NULL keys:
    ``Fraction(None)`` raises TypeError, so every ROLLUP over such a key is an INTERNAL error (and a
    plain GROUP BY is one whenever a NULL key reaches the release)."""
    ddl = ("CREATE TABLE tax.declarations (taxpayer_id VARCHAR, district_code VARCHAR, size_class DECIMAL(4, 1), "
           "vat_paid BIGINT)")
    path = _typed_file(tmp_path / "decimal", ddl, [(f"t{n}", 1.5) for n in range(12)],
                       "INSERT INTO tax.declarations VALUES (?, '320102', ?, 1)")
    guarded = guard("SELECT size_class, COUNT(*) AS c FROM tax.declarations GROUP BY ROLLUP (size_class)",
                    totals_policy, district=XUANWU, department="xuanwu-fgw")
    engine = DuckDBEngine(path)
    try:
        released = run(engine, guarded, timeout_s=30)
    finally:
        engine.close()
    assert [row[1] for row in released.rows] == [12, 12]
